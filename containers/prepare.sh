#!/usr/bin/env bash
# What the Compose stack needs before its first start, made only when missing (never overwritten):
#   containers/prepare.sh [ENV_FILE] [CERT_DIR]   # defaults: .env and nginx/certs
# ENV_FILE: generated secrets for the app (SECRET_KEY, JWT_SECRET_KEY) and the stack's own
# PostgreSQL, RabbitMQ and Grafana passwords (docker-compose.yml reads them); CERT_DIR: a
# self-signed certificate for Nginx (replace it with a real one: README "TLS: Let's Encrypt in production").
set -euo pipefail
cd "$(dirname "$0")/.."
env_file=${1:-.env}
cert_dir=${2:-nginx/certs}

secret() { openssl rand -hex 32; }

if [[ ! -e $env_file ]]; then
  umask 077
  {
    echo "# Made by containers/prepare.sh: generated secrets for the Compose stack (.env.example lists the rest)."
    echo "SECRET_KEY=$(secret)"
    echo "JWT_SECRET_KEY=$(secret)"
    echo "POSTGRES_PASSWORD=$(secret)"
    echo "RABBITMQ_PASSWORD=$(secret)"
    echo "GRAFANA_ADMIN_PASSWORD=$(secret)"
  } >"$env_file"
  echo "wrote $env_file (generated secrets)"
fi
if [[ ! -s $cert_dir/fullchain.pem || ! -s $cert_dir/privkey.pem ]]; then
  nginx/make-cert.sh "$cert_dir"
fi
