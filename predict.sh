#!/bin/sh
# The submission's entry point, run by the organisers as `sh predict.sh` in /workspace:
#   sh predict.sh [INPUTS [OUTPUTS]] [options of flare-predict (python -m inference.predict)]
# INPUTS defaults to /workspace/inputs and OUTPUTS to /workspace/outputs, so it runs the same in
# and out of the image; relative paths are taken from the current folder; the first argument that
# starts with '-' begins the options (a path that starts with '-': write ./-name). Set PYTHON to choose
# the interpreter; by default the checkout's .venv (the README's set-up) when it has one, so the
# script works without activating it, else python3 (the image's).
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
if [ -z "${PYTHON:-}" ] && [ -x "$here/.venv/bin/python" ]; then
    PYTHON="$here/.venv/bin/python"
fi
case "${1:-}" in
    -h|--help)
        echo "usage: sh predict.sh [INPUTS [OUTPUTS]] [OPTIONS]  (INPUTS default /workspace/inputs, OUTPUTS /workspace/outputs)"
        echo "INPUTS and OUTPUTS become -i and -o of python -m inference.predict, whose OPTIONS follow:"
        echo
        exec "${PYTHON:-python3}" -m inference.predict --help;;
    --version)
        exec "${PYTHON:-python3}" -m inference.predict --version;;
esac
inputs=/workspace/inputs
outputs=/workspace/outputs
if [ "$#" -ge 1 ] && [ "${1#-}" = "$1" ]; then
    inputs="$1"
    shift
    if [ "$#" -ge 1 ] && [ "${1#-}" = "$1" ]; then
        outputs="$1"
        shift
    fi
fi
exec "${PYTHON:-python3}" -m inference.predict -i "$inputs" -o "$outputs" "$@"
