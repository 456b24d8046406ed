# FLARE submission image: `docker run --gpus all -v in:/workspace/inputs -v out:/workspace/outputs flare:latest`
# runs predict.sh on every CT in /workspace/inputs. Needs weights/flare21_c2f.pt in the build context.
#
# torch comes from PyTorch's CUDA 12.9 index, not PyPI: PyPI's Linux torch 2.13 is built for CUDA
# 13.0, which needs an NVIDIA driver >= 580, newer than many organisers' machines; a CUDA 12 build
# runs on drivers >= 525 through CUDA's minor-version compatibility. The wheels bring their own
# CUDA libraries and cuDNN, so the base image is CUDA's smallest, and NVIDIA_DISABLE_REQUIRE stops
# the container toolkit from refusing drivers older than the base image's CUDA 12.9.
FROM nvidia/cuda:12.9.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    NVIDIA_DISABLE_REQUIRE=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /workspace
COPY requirements.txt ./
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cu129 "$(grep '^torch==' requirements.txt)" \
    && pip install --no-cache-dir -r requirements.txt \
    && python -c "import torch; assert torch.version.cuda.startswith('12.'), torch.version.cuda"

# Only the submission's code: inference/ and the small package it shares with the organisers' tools.
COPY flare_common/ flare_common/
COPY inference/ inference/
COPY weights/ weights/
COPY predict.sh ./

# Refuse to build a submission without usable weights.
RUN python -m inference.checkpoint check weights/flare21_c2f.pt

CMD ["sh", "predict.sh"]
