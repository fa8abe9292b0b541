#!/usr/bin/env bash
# The Compose command for this machine, then its arguments: Docker Compose where a Docker engine
# answers, else podman-compose with docker-compose.debian.yml (images built from Debian's packages).
#   containers/compose.sh up -d --build      # what `make up` runs
#   containers/compose.sh --engine           # prints docker or podman (exit 1: neither can run)
set -euo pipefail
cd "$(dirname "$0")/.."

engine() {
  if [[ -n ${SHOP_CONTAINER_ENGINE:-} ]]; then
    echo "$SHOP_CONTAINER_ENGINE"
  elif command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    echo docker
  elif command -v podman >/dev/null 2>&1 && { [[ -x .venv/bin/podman-compose ]] || command -v podman-compose >/dev/null 2>&1; }; then
    echo podman
  else
    return 1
  fi
}

if [[ ${1:-} == --engine ]]; then
  engine
  exit
fi
case $(engine || echo none) in
docker) exec docker compose "$@" ;;
podman)
  compose=.venv/bin/podman-compose
  [[ -x $compose ]] || compose=podman-compose
  # Images keep their HEALTHCHECK (the OCI format drops it).
  export BUILDAH_FORMAT=docker
  exec "$compose" -f docker-compose.yml -f docker-compose.debian.yml "$@"
  ;;
*)
  echo "no container engine: install Docker with its Compose plugin, or run containers/setup-podman.sh (Debian, root)" >&2
  exit 1
  ;;
esac
