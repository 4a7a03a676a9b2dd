#!/usr/bin/env bash
# One command does every set-up step, then runs what you asked for:
#   bash bootstrap.sh demo    set up, then run the demo on the bundled example run
#   bash bootstrap.sh test    set up, then run the whole test suite
#   bash bootstrap.sh rftfm ARGS…   set up, then run any rftfm command
# Set-up: a virtualenv in .venv (RFTFM_VENV to change), torch first (the CPU wheel here, so that trl
# does not pull the CUDA build), then rftfm with its dev extra. Re-runs skip the install while
# pyproject.toml is unchanged.
set -euo pipefail
cd "$(dirname "$0")"

PYTHON=${PYTHON:-python3}
VENV=${RFTFM_VENV:-.venv}
TORCH_SPEC=${RFTFM_TORCH_SPEC:-torch==2.13.0}

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "error: rftfm needs Python >= 3.11 (found: $("$PYTHON" --version 2>&1)); set PYTHON=python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
what=${1:-demo}
# The test suite's slow tier starts a real OpenAI-compatible server (llama.cpp) on localhost: `test`
# installs the local-llm extra too. llama-cpp-python compiles from source; its native build crashes on
# CPUs with AMX, so the CPU features are named instead of detected.
EXTRAS=dev
[ "$what" = test ] && EXTRAS=dev,local-llm
export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"}
stamp="$VENV/.rftfm-installed-$(cat pyproject.toml <(echo "$EXTRAS") | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  echo "==> installing $TORCH_SPEC, then rftfm[$EXTRAS] (first run only; a few minutes)"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
  "$VENV/bin/python" -m pip install --quiet -e ".[$EXTRAS]"
  rm -f "$VENV"/.rftfm-installed-*
  touch "$stamp"
fi

[ $# -gt 0 ] && shift
case "$what" in
  demo)  exec "$VENV/bin/rftfm" demo "$@" ;;
  test)  exec "$VENV/bin/python" -m pytest -q "$@" ;;
  rftfm) exec "$VENV/bin/rftfm" "$@" ;;
  *) echo "usage: bash bootstrap.sh demo|test|rftfm [args…]" >&2; exit 2 ;;
esac
