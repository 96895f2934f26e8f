# The mnv2 operator image: kopf + the Kubernetes client, no MindSpore.
# Build from the repository root: docker build -f docker/operator.Dockerfile -t mnv2-operator:0.1.0 .

# ---- build: a wheel of the project, installed with the operator extra into a venv ----
FROM python:3.11.10-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
COPY docker/constraints-operator.txt /tmp/constraints.txt
RUN pip wheel --no-deps --wheel-dir /dist . \
 && python -m venv /opt/mnv2 \
 && /opt/mnv2/bin/pip install -c /tmp/constraints.txt "$(ls /dist/mnv2-*.whl)[operator]"

# ---- runtime: the venv only, as a non-root user ----
FROM python:3.11.10-slim-bookworm
LABEL org.opencontainers.image.title="mnv2-operator" \
      org.opencontainers.image.description="Runs MobileNetV2TrainJob resources (kopf operator)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 10001 mnv2 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin mnv2
COPY --from=build /opt/mnv2 /opt/mnv2
ENV PATH=/opt/mnv2/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
# 8080: Prometheus metrics; 8081: kopf liveness (/healthz).
EXPOSE 8080 8081
ENTRYPOINT ["mnv2", "operator"]
