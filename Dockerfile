# auditor worker image. The torch build is a build argument:
#   docker build --build-arg TORCH=cpu   -t auditor:cpu .
#   docker build --build-arg TORCH=cu128 -t auditor:gpu .   (CUDA 12.8 wheels; needs the
#                                                            NVIDIA container toolkit to run)
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    AUDITOR_MODELS_DIR=/models \
    AUDITOR_CACHE_DIR=/cache

# torch first, from the index of the chosen build (a bare requirement would pull CUDA)
RUN pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${TORCH}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY auditor ./auditor
COPY workers ./workers
RUN pip install .

# never run as root: a worker reads datasets and writes job outputs on shared volumes
RUN useradd --create-home --uid 10001 auditor \
    && mkdir -p /models /cache /data \
    && chown auditor:auditor /cache /data
USER auditor
WORKDIR /home/auditor

ENTRYPOINT ["auditor"]
CMD ["worker", "--queues", "cpu"]
