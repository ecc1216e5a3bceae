#!/usr/bin/env bash
# Run the loss-surface benchmarks in benchmarks/ in one pytest run.
#
# They need MNIST under ./data and the cached paper-adam run 0 (create it with
# `landscape train paper-adam`); without either they are skipped, and they
# never train. About 8 minutes on a 2-core VM. Each run is also saved as JSON
# under .benchmarks/. Extra arguments go to pytest, for example
# --benchmark-json=FILE.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "installing the bench extra (loss-landscapes, joblib)"
.venv/bin/python -m pip install --quiet -e '.[test,bench]'

exec .venv/bin/python -m pytest benchmarks/ -p no:cacheprovider \
    --benchmark-columns=min,median,max,rounds --benchmark-autosave "$@"
