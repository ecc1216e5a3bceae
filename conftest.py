"""Settings shared by every test directory.

The landscape pytest plugin itself is loaded through its ``pytest11`` entry
point; this file only sets hypothesis profiles. ``HYPOTHESIS_PROFILE=ci``
runs more examples without a per-example deadline, because the shared CI
machine's timing is noisy.
"""

import os

from hypothesis import settings

settings.register_profile("default", max_examples=50, deadline=None)
settings.register_profile("ci", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
