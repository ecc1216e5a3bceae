#!/usr/bin/env bash
# The unit, property and plugin tests; needs no MNIST and no network.
#
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
exec .venv/bin/python -m pytest tests/ -p no:cacheprovider "$@"
