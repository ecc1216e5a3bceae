#!/usr/bin/env bash
# The main job: set up, fetch MNIST, re-check every claim, write the report.
#
# Extra arguments go to pytest, e.g. --landscape-experiments=paper-adam.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/landscape fetch-data mnist

status=0
# log_cli shows training progress (one line per epoch) while tests run.
.venv/bin/python -m pytest claims/ -p no:cacheprovider \
    -o log_cli=true --log-cli-level=INFO \
    --log-cli-format='%(asctime)s %(levelname)s %(message)s' \
    "$@" || status=$?

report_dir="$(pwd)/reports"
for argument in "$@"; do
    case "$argument" in
        --landscape-report-dir=*) report_dir="${argument#*=}" ;;
    esac
done
echo
echo "report: $report_dir/index.html"
echo "results: $report_dir/claims.json"
exit "$status"
