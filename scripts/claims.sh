#!/usr/bin/env bash
# The main job: set up, fetch MNIST, re-check every claim, write the report.
#
# Extra arguments go to pytest, e.g. --landscape-experiments=paper-adam.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
.venv/bin/landscape fetch-data mnist

report_dir="reports"
previous=""
for argument in "$@"; do
    case "$previous" in
        --landscape-report-dir) report_dir="$argument" ;;
    esac
    case "$argument" in
        --landscape-report-dir=*) report_dir="${argument#*=}" ;;
    esac
    previous="$argument"
done
started="$(mktemp)"

status=0
# log_cli shows training progress (one line per epoch) while tests run.
.venv/bin/python -m pytest claims/ -p no:cacheprovider \
    -o log_cli=true --log-cli-level=INFO \
    --log-cli-format='%(asctime)s %(levelname)s %(message)s' \
    "$@" || status=$?

echo
if [ "$report_dir/index.html" -nt "$started" ]; then
    echo "report: $(cd "$report_dir" && pwd)/index.html"
    echo "results: $(cd "$report_dir" && pwd)/claims.json"
else
    echo "no report was written (pytest exit code $status)"
fi
rm -f "$started"
exit "$status"
