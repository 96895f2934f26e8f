# The mnv2 trainer image for NVIDIA GPU nodes. MindSpore 2.10.0's PyPI wheel carries GPU plugins
# built for CUDA 11.1 and 11.6, so the runtime is CUDA 11.6 with cuDNN 8 (REFERENCE §2).
# Build from the repository root: docker build -f docker/trainer-gpu.Dockerfile -t mnv2-trainer-gpu:0.1.0 .
#
# Ubuntu 20.04 ships Python 3.8, so Python 3.11 comes from the official Debian *bullseye* image:
# bullseye and focal share glibc 2.31, so its /usr/local interpreter runs unchanged on the CUDA base.

# ---- build: the venv, made by the same interpreter the runtime gets ----
FROM python:3.11.10-slim-bullseye AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
COPY docker/constraints-trainer.txt /tmp/constraints.txt
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/mnv2 \
 && /opt/mnv2/bin/pip install -c /tmp/constraints.txt "$(ls /dist/mnv2-*.whl)[trainer]"

# ---- runtime: CUDA 11.6 + cuDNN 8, Python 3.11 and the venv ----
FROM nvidia/cuda:11.6.2-cudnn8-runtime-ubuntu20.04
LABEL org.opencontainers.image.title="mnv2-trainer-gpu" \
      org.opencontainers.image.description="MobileNetV2 training on MindSpore, NVIDIA GPU (CUDA 11.6, cuDNN 8)" \
      org.opencontainers.image.licenses="Apache-2.0"
# The shared libraries the bullseye interpreter links against, all present in focal.
# Focal's point releases move these versions; the CUDA base tag pins the OS snapshot instead.
# hadolint ignore=DL3008
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libssl1.1 libffi7 libsqlite3-0 libbz2-1.0 liblzma5 zlib1g libexpat1 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local /usr/local
RUN ldconfig
COPY --from=build /opt/mnv2 /opt/mnv2
RUN groupadd --gid 10001 mnv2 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin mnv2
ENV PATH=/opt/mnv2/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/mnv2
USER 10001:10001
WORKDIR /home/mnv2
EXPOSE 9090
ENTRYPOINT ["mnv2", "launch"]
