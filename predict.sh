#!/bin/sh
# The submission's entry point, run by the organisers as `sh predict.sh` in /workspace:
#   sh predict.sh [INPUTS [OUTPUTS [options of python -m inference.predict]]]
# INPUTS defaults to /workspace/inputs and OUTPUTS to /workspace/outputs, so it runs the same in
# and out of the image. Set PYTHON to choose the interpreter (default: python3).
set -eu
cd "$(dirname "$0")"
inputs="${1:-/workspace/inputs}"
outputs="${2:-/workspace/outputs}"
if [ "$#" -ge 2 ]; then shift 2; else shift "$#"; fi
exec "${PYTHON:-python3}" -m inference.predict -i "$inputs" -o "$outputs" "$@"
