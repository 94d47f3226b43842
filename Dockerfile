# The device host image: one image for every device kind. A host serves gRPC and runs whichever
# devices the coordinator loads into it (python -m services.host --name HOST --listen ADDRESS).
#
# Build it with `make image` (scripts/build-image.sh): that fills build/wheelhouse with the host's
# packages on this machine, generates the gRPC stubs into gen/ and picks a base image the engine
# has (BASE_IMAGE, python:3.11-slim by default, or one built from Debian packages). Nothing is
# downloaded during the build. The base must provide python3 (3.11) with the venv module.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# tagged NAME:build by scripts/build-image.sh: a rebuild keeps its cache, earlier ones can be pruned
LABEL aicn-testbed.stage=build
COPY build/wheelhouse /wheels
RUN python3 -m venv /opt/testbed \
 && /opt/testbed/bin/pip install --quiet --no-index --find-links /wheels --disable-pip-version-check \
      -r /wheels/requirements.txt \
 && /opt/testbed/bin/pip uninstall --quiet --yes pip setuptools \
 && find /opt/testbed -name '__pycache__' -prune -exec rm -rf {} + \
 && find /opt/testbed -name 'tests' -path '*/numpy/*' -prune -exec rm -rf {} +
COPY gen /opt/testbed/app/gen
COPY emulators /opt/testbed/app/emulators
COPY services /opt/testbed/app/services
COPY orchestrator /opt/testbed/app/orchestrator
RUN /opt/testbed/bin/python -m compileall -q -j 0 /opt/testbed

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="aicn-testbed device host" aicn-testbed.stage=host
COPY --from=build /opt/testbed /opt/testbed
ENV PATH=/opt/testbed/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONPATH=/opt/testbed/app:/opt/testbed/app/gen \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/testbed/app
# an unprivileged user by number, so Kubernetes can check runAsNonRoot without a passwd entry
USER 10001:10001
EXPOSE 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-m", "orchestrator.deploy.probe", "127.0.0.1:50051"]
ENTRYPOINT ["python", "-m", "services.host"]
CMD ["--name", "all", "--listen", "0.0.0.0:50051"]
