# The mnv2 trainer image for Ascend 910 nodes, on a CANN toolkit base image given at build time:
#   docker build -f docker/trainer-ascend.Dockerfile \
#     --build-arg CANN_BASE=<registry>/ascend-toolkit:<cann version with Python 3.11> -t mnv2-trainer-ascend:0.1.0 .
# The base must provide the CANN toolkit (/usr/local/Ascend/ascend-toolkit) and a python3.11
# interpreter; the NPU driver is mounted from the host by the Ascend device plugin at run time.
ARG CANN_BASE=ascendai/cann:8.0.0-910b-ubuntu22.04-py3.11

FROM ${CANN_BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY operator/ operator/
COPY docker/constraints-trainer.txt /tmp/constraints.txt
RUN python3.11 -m pip wheel --no-deps --wheel-dir /dist . \
 && python3.11 -m venv /opt/mnv2 \
 && /opt/mnv2/bin/pip install -c /tmp/constraints.txt "$(ls /dist/mnv2-*.whl)[trainer]"

FROM ${CANN_BASE}
LABEL org.opencontainers.image.title="mnv2-trainer-ascend" \
      org.opencontainers.image.description="MobileNetV2 training on MindSpore, Ascend 910 (CANN base given at build time)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mnv2 /opt/mnv2
# The CANN environment (what set_env.sh exports), fixed here so no shell wrapper is needed at start.
ENV ASCEND_HOME=/usr/local/Ascend \
    ASCEND_TOOLKIT_HOME=/usr/local/Ascend/ascend-toolkit/latest \
    ASCEND_OPP_PATH=/usr/local/Ascend/ascend-toolkit/latest/opp \
    LD_LIBRARY_PATH=/usr/local/Ascend/driver/lib64:/usr/local/Ascend/driver/lib64/common:/usr/local/Ascend/driver/lib64/driver:/usr/local/Ascend/ascend-toolkit/latest/lib64 \
    PATH=/opt/mnv2/bin:/usr/local/Ascend/ascend-toolkit/latest/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Root on purpose: the Ascend device plugin mounts /dev/davinci*, /dev/davinci_manager and the host
# driver (/usr/local/Ascend/driver) owned by root/HwHiAiUser with modes that the pod's user cannot
# open otherwise. Where your nodes map HwHiAiUser to a known uid, run as that uid instead
# (pod securityContext.runAsUser via the operator's Ascend profile).
# hadolint ignore=DL3002
USER 0:0
EXPOSE 9090
ENTRYPOINT ["mnv2", "launch"]
