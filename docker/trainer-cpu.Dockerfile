# The mnv2 trainer image for CPU nodes: MindSpore 2.10.0 (CPU kernels), the launcher and the trainer.
# Build from the repository root: docker build -f docker/trainer-cpu.Dockerfile -t mnv2-trainer-cpu:0.1.0 .

# ---- build: the project wheel, installed with the trainer extra into a venv ----
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
COPY docker/constraints-trainer.txt /tmp/constraints.txt
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/mnv2 \
 && /opt/mnv2/bin/pip install -c /tmp/constraints.txt "$(ls /dist/mnv2-*.whl)[trainer]"

# ---- runtime ----
FROM python:3.11.10-slim-bookworm
LABEL org.opencontainers.image.title="mnv2-trainer-cpu" \
      org.opencontainers.image.description="MobileNetV2 training on MindSpore, CPU" \
      org.opencontainers.image.licenses="Apache-2.0"
# g++ compiles the trainer's C++ CPU kernels (mnv2/csrc), here once and in a pod only for a CPU the
# prebuilt copies do not fit; it also brings libgomp1, the OpenMP runtime MindSpore and the kernels use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++=4:12.2.0-3 \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 mnv2 && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin mnv2
COPY --from=build /opt/mnv2 /opt/mnv2
# Portable copies of the kernels (-march=x86-64-v3 and x86-64-v2, never native: the image runs on
# other CPUs than the one building it), so pods load them instead of each compiling at start.
RUN /opt/mnv2/bin/python -m mnv2.ops._build --prebuild
ENV PATH=/opt/mnv2/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HOME=/home/mnv2
USER 10001:10001
WORKDIR /home/mnv2
# 9090: the trainer's Prometheus metrics (rank 0).
EXPOSE 9090
ENTRYPOINT ["mnv2", "launch"]
