# The stack's other services built from Debian's packages, for a machine that reaches Debian's
# archive but no image registry (docker-compose.debian.yml uses one target per service):
#   podman build -f containers/services.Dockerfile --target postgres -t localhost/shop-postgres containers
# Each target behaves like the official image docker-compose.yml names where the stack relies on it:
# the same environment variables, ports, data directories, commands and health checks.
# Debian bookworm, except Nginx: `http2 on;` needs Nginx 1.25.1 or later, which is trixie's.
# The services run as the users Debian's packages create (postgres, redis, rabbitmq, prometheus):
# their ids are assigned when the package installs, so USER names them.
# hadolint global ignore=DL3066
ARG BASE=localhost/debian-base:bookworm
ARG NGINX_BASE=localhost/debian-base:trixie

# PostgreSQL 15 (postgres:16-alpine upstream): POSTGRES_USER, POSTGRES_PASSWORD and POSTGRES_DB
# create the cluster on first start, data in /var/lib/postgresql/data.
FROM ${BASE} AS postgres
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data \
    && install -d -o postgres -g postgres /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
USER postgres
EXPOSE 5432
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]

# Redis 7 (redis:7-alpine upstream): data in /data; like the official image, out of protected mode
# (the container network is its boundary), whatever arguments the command adds.
FROM ${BASE} AS redis
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && install -d -o redis -g redis /data
COPY redis-entrypoint.sh /usr/local/bin/
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]

# RabbitMQ 3.10 with the management and Prometheus plugins (rabbitmq:3.13-management upstream):
# RABBITMQ_DEFAULT_USER, RABBITMQ_DEFAULT_PASS and RABBITMQ_DEFAULT_VHOST, data in /var/lib/rabbitmq.
FROM ${BASE} AS rabbitmq
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && chown -R rabbitmq:rabbitmq /etc/rabbitmq /var/lib/rabbitmq \
    && install -d -o rabbitmq -g rabbitmq /var/log/rabbitmq
COPY rabbitmq-entrypoint.sh /usr/local/bin/
ENV RABBITMQ_LOGS=- HOME=/var/lib/rabbitmq
USER rabbitmq
EXPOSE 5672 15672 15692
ENTRYPOINT ["rabbitmq-entrypoint.sh"]
CMD ["rabbitmq-server"]

# Nginx 1.26 (nginx:1.27-alpine upstream), with the official image's two start-up conveniences the
# stack uses: /etc/nginx/templates/*.template filled from the environment, and NGINX_LOCAL_RESOLVERS
# (the container's DNS servers, for `resolver`) when NGINX_ENTRYPOINT_LOCAL_RESOLVERS is set.
FROM ${NGINX_BASE} AS nginx
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx gettext-base busybox \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* /etc/nginx/sites-enabled/* \
    && ln -s /bin/busybox /usr/local/bin/wget \
    && useradd --system --no-create-home --shell /usr/sbin/nologin nginx \
    && install -d -o nginx -g nginx /var/cache/nginx
COPY nginx-entrypoint.sh /usr/local/bin/
EXPOSE 80 443
STOPSIGNAL SIGQUIT
ENTRYPOINT ["nginx-entrypoint.sh"]
CMD ["nginx", "-g", "daemon off;"]

# Prometheus 2.42 (prom/prometheus upstream): the same binary interface, data in /prometheus.
FROM ${BASE} AS prometheus
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus busybox \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && ln -s /bin/busybox /usr/local/bin/wget \
    && install -d -o prometheus -g prometheus /prometheus
USER prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# Alertmanager 0.25 (prom/alertmanager upstream), data in /alertmanager.
FROM ${BASE} AS alertmanager
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus-alertmanager busybox \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
    && ln -s /bin/busybox /usr/local/bin/wget \
    && install -d -o prometheus -g prometheus /alertmanager
USER prometheus
EXPOSE 9093
ENTRYPOINT ["/usr/bin/prometheus-alertmanager"]
CMD ["--config.file=/etc/alertmanager/alertmanager.yml", "--storage.path=/alertmanager"]

# The exporters (nginx/nginx-prometheus-exporter, postgres-exporter, redis_exporter upstream):
# configured by the same flags and variables.
FROM ${BASE} AS exporters
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        prometheus-nginx-exporter prometheus-postgres-exporter prometheus-redis-exporter \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
USER nobody

# An SMTP sink with Mailpit's interface (axllent/mailpit upstream): SMTP on 1025, and on 8025 the
# inbox as JSON at /api/v1/messages (Mailpit's shape, the fields the stack test reads) and /readyz;
# `/mailpit readyz` is the health check, as in Mailpit's image.
FROM ${BASE} AS smtp-sink
# hadolint ignore=DL3008
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-aiosmtpd \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*
COPY --chmod=0755 smtp_sink.py /mailpit
USER nobody
EXPOSE 1025 8025
CMD ["/mailpit"]
