# FLARE submission image: `docker run --gpus all -v in:/workspace/inputs -v out:/workspace/outputs flare:latest`
# runs predict.sh on every CT in /workspace/inputs. Needs weights/flare21_c2f.pt in the build context.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /workspace
COPY requirements.txt requirements-evaluation.txt ./
RUN pip install --no-cache-dir -r requirements.txt

COPY evaluation/ evaluation/
COPY inference/ inference/
COPY weights/ weights/
COPY predict.sh ./

# Refuse to build a submission without usable weights.
RUN python -m inference.checkpoint check weights/flare21_c2f.pt

CMD ["sh", "predict.sh"]
