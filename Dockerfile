# The shop's image: one image for the API (gunicorn), the Celery worker and beat, and migrations.
#   docker build -t shop .                                          # on the official slim Python image
#   podman build --build-arg BASE=localhost/debian-base:bookworm -t shop .   # Debian's own Python 3.11
# Small: only the runtime requirements (the "# Runtime" section of requirements.txt), installed in a
# separate stage. Runs as an unprivileged user and writes nowhere but /tmp, so it runs with a
# read-only root filesystem (`read_only: true` plus a tmpfs on /tmp, as docker-compose.yml does).
# `make images` builds it and reports its size.

# Any Debian bookworm image: the official python:3.11-slim-bookworm (Python in /usr/local), or a bare
# Debian root filesystem, on which Debian's python3 (3.11) is installed.
ARG BASE=python:3.11-slim-bookworm

FROM ${BASE} AS python
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# hadolint ignore=DL3008
RUN if ! command -v python3 >/dev/null; then \
        apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv \
        && rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi \
    && groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --home-dir /app --shell /usr/sbin/nologin shop

FROM python AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN sed -n '/^# Runtime/,/^# Tests/p' requirements.txt | grep -v '^#' > runtime.txt \
    && python3 -m venv /venv \
    && /venv/bin/pip install --quiet -r runtime.txt \
    && /venv/bin/python -m compileall -q /venv/lib > /dev/null

FROM python
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/shop-metrics
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=root:root wsgi.py celery_worker.py gunicorn.conf.py ./
COPY --chown=root:root migrations/ migrations/
# Swagger UI's and ReDoc's files, which the shop serves itself (shop/core/apidocs.py), as `make install` left them.
COPY --chown=root:root node_modules/swagger-ui-dist/swagger-ui.css node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui-standalone-preset.js node_modules/swagger-ui-dist/
COPY --chown=root:root node_modules/redoc/bundles/redoc.standalone.js node_modules/redoc/bundles/
COPY --chown=root:root shop/ shop/
# Bytecode compiled now, as root: the running user cannot (and need not) write next to the code.
RUN python -m compileall -q /app > /dev/null
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
