# syntax=docker/dockerfile:1
# Two stages: the builder fetches the locked dependencies as wheels (every file checked against requirements.lock's
# sha256) and builds the project's wheel; the runtime installs exactly those wheels, offline and hash-checked again,
# so it carries no compiler, no build tools and no source tree, and the versions are the ones CI tested.

# python:3.11-slim pinned by digest, so a rebuild starts from the same bytes. To move it to a newer patch release:
#   docker buildx imagetools inspect python:3.11-slim      # prints "Digest: sha256:..." of the multi-platform index
# then replace the digest below (or pass --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> to try one).
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# .dockerignore admits only what the wheel is built from (pyproject.toml, README.md, LICENSE, bridge/, schemas/)
# and requirements.lock.
COPY . .
# Binary wheels only: a wheel built here from an sdist would not match the lock's hashes in the runtime stage.
RUN pip download --require-hashes --only-binary=:all: --no-deps --dest /wheels --requirement requirements.lock \
 && pip install --no-index --find-links=/wheels --require-hashes --no-deps --requirement requirements.lock \
 && pip wheel --no-deps --no-build-isolation --wheel-dir /dist . \
 && cp requirements.lock /dist/

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
# Bind mounts, not COPY: the wheels never become a layer of the final image. The lock's hashes are checked again.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-index --find-links=/wheels --require-hashes --no-deps --requirement /dist/requirements.lock \
 && pip install --no-index --no-deps /dist/appmetrica_kafka_bridge-*.whl
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
