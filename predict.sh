#!/bin/sh
# The submission's entry point, run by the organisers as `sh predict.sh` in /workspace:
#   sh predict.sh [INPUTS [OUTPUTS [options of python -m inference.predict]]]
# INPUTS defaults to /workspace/inputs and OUTPUTS to /workspace/outputs, so it runs the same in
# and out of the image; relative paths are taken from the current folder. Set PYTHON to choose
# the interpreter (default: python3).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
inputs="${1:-/workspace/inputs}"
outputs="${2:-/workspace/outputs}"
if [ "$#" -ge 2 ]; then shift 2; else shift "$#"; fi
exec "${PYTHON:-python3}" -m inference.predict -i "$inputs" -o "$outputs" "$@"
