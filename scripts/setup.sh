#!/usr/bin/env bash
# Create ./.venv (if missing) and install landscape with its test extras.
#
# torch and torchvision are installed first, pinned, because an unpinned
# install may pick a newer release than this project supports. The package
# install is skipped when pyproject.toml has not changed since the last one.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${LANDSCAPE_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
STAMP=.venv/.landscape-installed

if [ ! -x .venv/bin/python ]; then
    echo "creating virtual environment in .venv"
    "$PYTHON" -m venv .venv
fi

if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
    echo "installing $TORCH_SPEC (a large download on first install)"
    # shellcheck disable=SC2086 # the spec is a list of requirements
    .venv/bin/python -m pip install --quiet $TORCH_SPEC
fi

wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ] || ! .venv/bin/python -c "import landscape" 2>/dev/null; then
    echo "installing landscape and its test dependencies"
    .venv/bin/python -m pip install --quiet -e '.[test]'
    echo "$wanted" > "$STAMP"
fi
