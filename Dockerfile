# FLARE submission image: `docker run --gpus all -v in:/workspace/inputs -v out:/workspace/outputs flare:latest`
# runs predict.sh on every CT in /workspace/inputs. Needs the weights (WEIGHTS) in the build context.
#
# `docker build -t flare .` builds the GPU submission. torch comes from PyTorch's CUDA 12.6 index,
# not PyPI: PyPI's Linux torch 2.13 is built for CUDA 13.0, which needs an NVIDIA driver >= 580,
# newer than many organisers' machines; a CUDA 12 build runs on drivers >= 525 through CUDA's
# minor-version compatibility. The wheels bring their own CUDA libraries and cuDNN, so the base
# image is CUDA's smallest, and NVIDIA_DISABLE_REQUIRE stops the container toolkit from refusing
# drivers older than the base image's CUDA 12.6. PyTorch 2.13's one CUDA 12 build is for 12.6
# (its CUDA support matrix: 12.6 and 13.0 stable, 13.2 experimental; no 12.8 or 12.9 wheels). The
# CUDA 12.6 build has kernels up to Hopper: for Blackwell GPUs build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130 --build-arg TORCH_CUDA=13 (driver >= 580).
#
# The build arguments make the same file build a CPU image (docs/container.md):
#   BASE_IMAGE    the image to start from: any Debian or Ubuntu with python3 >= 3.10 in apt
#   TORCH_INDEX   the package index torch comes from (https://download.pytorch.org/whl/cpu: CPU)
#   TORCH_WHEELS  instead: a folder of the build context holding the torch wheel (no index needed;
#                 torch's own dependencies still come from PyPI)
#   TORCH_CUDA    the CUDA major version the installed torch must be built for, or "none" (CPU)
#   CA_CERTS      a CA bundle of the build context for pip to trust (behind a TLS-intercepting proxy)
#   WEIGHTS       the checkpoint of the build context the image runs (default the shipped one): the
#                 image's only one, as weights/flare21_c2f.pt, whatever its name in the context
# e.g. docker build -t flare:cpu --build-arg BASE_IMAGE=debian:bookworm-slim \
#        --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu --build-arg TORCH_CUDA=none .
ARG BASE_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04

FROM ${BASE_IMAGE} AS python

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# apt-get clean: a base image without Docker's apt settings (a plain Debian) keeps the packages and
# apt's caches (about 90 MB) otherwise. tini is the container's first process (the ENTRYPOINT
# below): a process 1 ignores every signal it has no handler for, so without it a `docker stop`
# in the submission's first tenth of a second, before Python's handler is set, waited 10 s for
# the kill; tini passes the stop on and reaps what the submission leaves.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*

# The virtual environment is made in a stage of its own, so that what is copied from the build
# context for it (a torch wheel, a CA bundle) never becomes a layer of the image: only /opt/venv is.
FROM python AS venv

ARG TORCH_INDEX=https://download.pytorch.org/whl/cu126
ARG TORCH_WHEELS=
ARG TORCH_CUDA=12
ARG CA_CERTS=

# constraints.txt: the exact versions of the other packages, those the project was tested with,
# so that a rebuild next month installs the same OpenVINO, NumPy and nibabel as today's.
COPY requirements.txt constraints.txt ${TORCH_WHEELS} ${CA_CERTS} /tmp/build/
RUN if [ -n "$CA_CERTS" ]; then export PIP_CERT="/tmp/build/${CA_CERTS##*/}"; fi \
    && python3 -m venv /opt/venv \
    && torch="$(grep '^torch==' /tmp/build/requirements.txt)" \
    && if [ -n "$TORCH_WHEELS" ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --no-deps --find-links /tmp/build "$torch"; \
    else \
        /opt/venv/bin/pip install --no-cache-dir --index-url "$TORCH_INDEX" "$torch"; \
    fi \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/build/requirements.txt -c /tmp/build/constraints.txt \
    && /opt/venv/bin/pip check \
    && /opt/venv/bin/python -c "import sys, torch; want, got = sys.argv[1], torch.version.cuda; \
ok = got is None if want == 'none' else (got or '').split('.')[0] == want; \
sys.exit(0 if ok else f'torch {torch.__version__} has CUDA {got or \"none\"}, TORCH_CUDA={want} expected')" "$TORCH_CUDA"

FROM python

ARG WEIGHTS=weights/flare21_c2f.pt

ENV NVIDIA_DISABLE_REQUIRE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

COPY --from=venv /opt/venv /opt/venv

# Only the submission's code: inference/ and the small package it shares with the organisers' tools.
WORKDIR /workspace
COPY flare_common/ flare_common/
COPY inference/ inference/
COPY ${WEIGHTS} weights/flare21_c2f.pt
COPY predict.sh ./

# Refuse to build a submission without usable weights; export them to OpenVINO, which runs the
# networks 2-3x faster than PyTorch when the container gets no GPU (inference/openvino_runtime.py).
# The project's own code compiled now: a read-only container cannot write its bytecode, and
# compiling it at every start cost 20-30 ms.
RUN python -m inference.checkpoint check weights/flare21_c2f.pt \
    && python -m inference.checkpoint export-openvino weights/flare21_c2f.pt \
    && python -m compileall -q inference flare_common

ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sh", "predict.sh"]
