#!/bin/sh
# The default user, password and vhost from RABBITMQ_DEFAULT_*, as the official image takes them;
# that user may connect from other containers. Then the server (logs to standard output).
set -eu
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
default_vhost = ${RABBITMQ_DEFAULT_VHOST:-/}
loopback_users = none
log.console = true
log.file = false
CONF
exec "$@"
