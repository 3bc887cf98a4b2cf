# syntax=docker/dockerfile:1
# ftcn-stream images. Default target: CUDA + TensorRT from NVIDIA's TensorRT base image.
#   docker build -t ftcn-stream .                       # GPU (TensorRT, onnxruntime-gpu, CUDA torch)
#   docker build --target cpu -t ftcn-stream:cpu .      # CPU only (onnxruntime, CPU torch)
#   docker run --gpus all -p 8000:8000 -p 1883:1883 -v ftcn-data:/data ftcn-stream [SOURCE ...]
# The default command is the live analyzer (`ftcn-stream run`): HTTP (/healthcheck, /predict,
# /streams, /viewer, /whip, /metrics) on 8000 and the embedded MQTT broker on 1883; sources can be
# given as arguments or added at runtime with POST /streams. Settings: configs/docker-{gpu,cpu}.yaml.
# Weights and engines live in the /data volume; both are created at first start when missing.

ARG TRT_IMAGE=nvcr.io/nvidia/tensorrt:24.12-py3
ARG CPU_IMAGE=python:3.11-slim-bookworm
ARG TORCH_VERSION=2.13.0

# ---------------------------------------------------------------------------------------------- cpu
FROM ${CPU_IMAGE} AS cpu
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FTCN_WEIGHTS_DIR=/data/weights FTCN_ENGINE_DIR=/data/engines FTCN_ENGINE_BACKENDS=onnxruntime
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install torch==${TORCH_VERSION} --index-url https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md build_engines.py ./
COPY ftcn ftcn
COPY engines engines
COPY configs configs
COPY stream stream
COPY docker/entrypoint.sh /usr/local/bin/ftcn-entrypoint
RUN pip install ".[onnx]"
RUN useradd --create-home --uid 10001 ftcn && mkdir -p /data && chown ftcn /data
USER ftcn
VOLUME ["/data"]
EXPOSE 8000 1883
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthcheck || exit 1
ENTRYPOINT ["/usr/local/bin/ftcn-entrypoint", "ftcn-stream", "run", "--config", "/app/configs/docker-cpu.yaml"]
CMD []

# ---------------------------------------------------------------------------------------------- gpu
# NVIDIA's image brings CUDA, cuDNN and TensorRT (Python bindings included); torch uses the same driver.
FROM ${TRT_IMAGE} AS gpu
ARG TORCH_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    FTCN_WEIGHTS_DIR=/data/weights FTCN_ENGINE_DIR=/data/engines FTCN_ENGINE_BACKENDS=tensorrt,onnxruntime,torch
RUN apt-get update && apt-get install -y --no-install-recommends ffmpeg curl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN python3 -c "import tensorrt; print('TensorRT', tensorrt.__version__)" \
    && pip install torch==${TORCH_VERSION}
COPY pyproject.toml README.md build_engines.py ./
COPY ftcn ftcn
COPY engines engines
COPY configs configs
COPY stream stream
COPY docker/entrypoint.sh /usr/local/bin/ftcn-entrypoint
# tensorrt comes from the base image, so only the ONNX extras are installed here.
RUN pip install ".[onnx]" && pip uninstall -y onnxruntime && pip install "onnxruntime-gpu>=1.17"
RUN useradd --create-home --uid 10001 ftcn && mkdir -p /data && chown ftcn /data
USER ftcn
VOLUME ["/data"]
EXPOSE 8000 1883
HEALTHCHECK --interval=30s --timeout=5s --start-period=900s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthcheck || exit 1
ENTRYPOINT ["/usr/local/bin/ftcn-entrypoint", "ftcn-stream", "run", "--config", "/app/configs/docker-gpu.yaml"]
CMD []
