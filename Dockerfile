# syntax=docker/dockerfile:1
# Two stages: the builder turns the project and its dependencies into wheels; the runtime installs only those
# wheels, offline, so it carries no compiler, no build tools and no source tree.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore admits only what the wheel is built from (pyproject.toml, bridge/, schemas/).
COPY . .
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="appmetrica-kafka-bridge" \
      org.opencontainers.image.description="Moves Avro events from Kafka into the AppMetrica Post API." \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# A fixed uid/gid lets Kubernetes check runAsNonRoot without a name lookup and lets volumes be owned ahead of time.
RUN groupadd --system --gid 10001 bridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin bridge
# A bind mount, not COPY: the wheels never become a layer of the final image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/appmetrica_kafka_bridge-*.whl
# The documented configuration names schema_file relative to the working directory
# ("schemas/appmetrica_event.avsc"): point that at the contract inside the installed package, and fail the
# build if the wheel came without it (bridge/schemas is a symlink to ../schemas that setuptools must follow).
WORKDIR /app
RUN ln -s "$(python -c 'import bridge, pathlib; print(pathlib.Path(bridge.__file__).parent / "schemas")')" schemas \
 && test -f schemas/appmetrica_event.avsc
USER 10001:10001
# server.port's default; /healthz, /readyz and /metrics are served there. The configuration is expected at
# /etc/appmetrica-bridge/config.yaml (mounted from a ConfigMap by the Helm chart) and the key in
# BRIDGE_POST_API_KEY. No HEALTHCHECK: the port is configurable, and Kubernetes uses its own probes.
EXPOSE 8080
ENTRYPOINT ["appmetrica-bridge"]
CMD ["run", "--config", "/etc/appmetrica-bridge/config.yaml"]
