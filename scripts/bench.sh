#!/usr/bin/env bash
# Run the speed benchmarks in benchmarks/ in one pytest-benchmark run:
# loss surfaces, training, snapshot capture and trajectory PCA.
#
# All of them need MNIST under ./data (`landscape fetch-data`). The surface
# benchmarks also need the cached paper-adam run 0 (`landscape train
# paper-adam`) and are skipped without it; the training benchmarks train short
# runs of their own. The whole run took under 4 minutes on a 2-core VM. It
# writes up to 4 GB of trajectory files to a temporary folder and deletes
# them. Each run is also saved as JSON under .benchmarks/. Extra arguments go
# to pytest, for example --benchmark-json=FILE or -k bench_training.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
echo "installing the bench extra (loss-landscapes, joblib)"
.venv/bin/python -m pip install --quiet -e '.[test,bench]'

exec .venv/bin/python -m pytest benchmarks/ -p no:cacheprovider \
    --benchmark-columns=min,median,max,rounds --benchmark-autosave "$@"
