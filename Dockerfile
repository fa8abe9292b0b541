# The shop's image: one image for the API (gunicorn), the Celery worker and beat, and migrations.
#   docker build -t shop .
# Small: a slim base, only the runtime requirements (the "# Runtime" section of requirements.txt),
# built in a separate stage. Runs as an unprivileged user.

FROM python:3.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN sed -n '/^# Runtime/,/^# Tests/p' requirements.txt | grep -v '^#' > runtime.txt \
    && python -m venv /venv \
    && /venv/bin/pip install -r runtime.txt

FROM python:3.11-slim-bookworm
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    BIND=0.0.0.0:8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/shop-metrics
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --home-dir /app --shell /usr/sbin/nologin shop
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=root:root wsgi.py celery_worker.py gunicorn.conf.py ./
COPY --chown=root:root migrations/ migrations/
# Swagger UI's and ReDoc's files, which the shop serves itself (shop/core/apidocs.py), as `make install` left them.
COPY --chown=root:root node_modules/swagger-ui-dist/swagger-ui.css node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui-standalone-preset.js node_modules/swagger-ui-dist/
COPY --chown=root:root node_modules/redoc/bundles/redoc.standalone.js node_modules/redoc/bundles/
COPY --chown=root:root shop/ shop/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
