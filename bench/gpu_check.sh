#!/usr/bin/env bash
# The GPU check in one command, on a fresh machine with one NVIDIA GPU and a clone of this repository:
#
#   bash bench/gpu_check.sh                 # venv .venv-gpu, installs, then bench/gpu_check.py's table
#   bash bench/gpu_check.sh --only smollm2  # arguments go to bench/gpu_check.py
#   VENV=/tmp/venv PYTHON=python3.11 bash bench/gpu_check.sh
#
# Installs from the package registries only: torch as the package pins it (PyPI's default
# Linux wheel is the CUDA build), the package with its adapters and qlora extras
# (bitsandbytes), the offline demo assets, pytest (for `pytest -m gpu`), and flash-attn only
# when a prebuilt wheel installs within FLASH_ATTN_SECONDS (flash-attn publishes source
# only on PyPI; building it takes far longer than this check, so it is skipped with a note
# and attention runs on PyTorch's SDPA). Runs `pytest -m gpu`, then the table; exits 1 when a GPU test
# or a row of the table fails.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3}
FLASH_ATTN_SECONDS=${FLASH_ATTN_SECONDS:-90}

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -e '.[adapters,qlora]'
"${PIP[@]}" --no-deps -r requirements-demo.txt
"${PIP[@]}" 'pytest==9.0.3'
if timeout "$FLASH_ATTN_SECONDS" "${PIP[@]}" --only-binary :all: flash-attn 2>/dev/null; then
    echo "flash-attn: installed from a wheel"
else
    echo "flash-attn: no wheel installed within ${FLASH_ATTN_SECONDS} s (PyPI has source only); skipped, attention on SDPA"
fi
echo "install: $(($(date +%s) - start)) s"

"$VENV/bin/python" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'torch sees no CUDA GPU: is the NVIDIA driver installed?')"
tests=0
"$VENV/bin/python" -m pytest -q -m gpu tests/ || tests=$?
table=0
"$VENV/bin/python" bench/gpu_check.py "$@" || table=$?
if [ "$tests" != 0 ]; then
    echo "pytest -m gpu failed (exit $tests): see its output above the table"
fi
exit $((tests || table))
