#!/bin/sh
# Wheels the GPU check needs on a lent GPU machine whose image lacks them (Python 3.12, x86-64):
# nibabel and connected-components-3d. Run here, in the repository root; the folder .whl/ is ignored
# by git and travels with `carry`. There, first:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
set -eu
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
for package in "nibabel==5.4.2" "connected-components-3d==4.1.1"; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d .whl "$package"
done
ls .whl
