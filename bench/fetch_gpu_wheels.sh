#!/bin/sh
# Wheels the GPU check needs on a GPU machine whose Python lacks them (Python 3.12, x86-64, e.g. a
# stock PyTorch image): nibabel and connected-components-3d at constraints.txt's versions,
# downloaded into .whl/ (ignored by git). Copy .whl/ along with the checkout; on the GPU machine, first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -eu
cd "$(dirname "$0")/.."
for name in nibabel connected-components-3d; do
    package="$(grep -x "$name==.*" constraints.txt)" || { echo "error: constraints.txt: no pin for $name" >&2; exit 2; }
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "$package"
done
ls .whl
