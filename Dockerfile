# syntax=docker/dockerfile:1
# xtsdb server image.
#
#   docker build -t xtsdb .
#   docker run -d --name xtsdb -p 127.0.0.1:7878:7878 -p 127.0.0.1:8086:8086 \
#     -v xtsdb-data:/var/lib/xtsdb --shm-size 1g --stop-timeout 60 xtsdb
#
# deploy/docker-compose.yml runs it with a named volume, a healthcheck, a stop
# grace period and optional Prometheus; docs/operations.md explains each setting.

# -- build: the wheels of xtsdb and of its dependencies ---------------------------------
FROM python:3.11-slim AS build
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the context to these).
COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY server ./server
COPY client ./client
# Every dependency ships manylinux wheels, so no compiler is needed even here.
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# -- runtime: the wheels installed, nothing else ----------------------------------------
FROM python:3.11-slim AS runtime
# A fixed uid/gid, so a bind-mounted data directory can be chowned to it on the host.
RUN groupadd --system --gid 10001 xtsdb \
    && useradd --system --uid 10001 --gid xtsdb --home-dir /var/lib/xtsdb \
       --shell /usr/sbin/nologin xtsdb \
    && mkdir -p /var/lib/xtsdb /var/backups/xtsdb \
    && chown xtsdb:xtsdb /var/lib/xtsdb /var/backups/xtsdb
# The wheels are bind-mounted from the build stage, so they never become an image layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels xtsdb

# Every setting is an XTSDB_* variable (`xtsdb-server --help` lists them); these are the image's.
# The server listens on all interfaces of the container: Docker's port publishing is
# the network boundary (compose publishes on 127.0.0.1 only). XTSDB_ALLOW_REMOTE=1 is
# what a non-loopback address requires when no tokens are configured; to require
# authentication, set XTSDB_TOKEN_FILE (or XTSDB_TOKENS) -- then clients and the
# healthcheck need XTSDB_TOKEN -- and XTSDB_TLS_CERT/XTSDB_TLS_KEY for TLS.
ENV XTSDB_DATA_DIR=/var/lib/xtsdb \
    XTSDB_HOST=0.0.0.0 \
    XTSDB_ALLOW_REMOTE=1 \
    XTSDB_PORT=7878 \
    XTSDB_HTTP_PORT=8086 \
    XTSDB_BACKUP_DIR=/var/backups/xtsdb \
    PYTHONUNBUFFERED=1

USER xtsdb
WORKDIR /var/lib/xtsdb
VOLUME /var/lib/xtsdb
# 7878: the xtsdb protocol. 8086: HTTP (InfluxDB API, Prometheus remote storage,
# /metrics, /healthz, /readyz), InfluxDB's port, where its clients look first.
EXPOSE 7878 8086

# Recovery replays the WAL before the port opens: failures during start-period do not count.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["xtsdb", "--url", "xtsdb://127.0.0.1:7878", "--timeout", "3", "ping"]

# Exec form: the server is PID 1 and receives `docker stop`'s SIGTERM itself, then
# stops gracefully (shutdown_timeout, default 30 s). Give it time: --stop-timeout 60.
STOPSIGNAL SIGTERM
ENTRYPOINT ["xtsdb-server"]
CMD []
