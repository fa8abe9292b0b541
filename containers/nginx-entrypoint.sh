#!/bin/sh
# As the official Nginx image starts: with NGINX_ENTRYPOINT_LOCAL_RESOLVERS set, NGINX_LOCAL_RESOLVERS
# is the container's DNS server (from /etc/resolv.conf); each /etc/nginx/templates/X.template is
# written to NGINX_ENVSUBST_OUTPUT_DIR/X (default /etc/nginx/conf.d) with the environment's
# variables filled in, and no others (Nginx's own `$host` and the like stay as they are).
set -eu
if [ -n "${NGINX_ENTRYPOINT_LOCAL_RESOLVERS:-}" ]; then
  # Only the first: the engine's own DNS server (Docker's 127.0.0.11, Podman's aardvark-dns), which
  # knows the services' names and forwards the rest. Podman lists the host's servers after it, and
  # Nginx asks its resolvers in turn: one that does not know `app` would fail every other lookup.
  NGINX_LOCAL_RESOLVERS=$(awk '/^nameserver/ { if ($2 ~ ":") print "[" $2 "]"; else print $2; exit }' /etc/resolv.conf)
  export NGINX_LOCAL_RESOLVERS
fi
out=${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}
defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  envsubst "$defined" <"$template" >"$out/$(basename "$template" .template)"
done
exec "$@"
