#!/usr/bin/env sh
# A self-signed certificate for local use: nginx/make-cert.sh [DIR] [HOSTNAME]
# Writes DIR/fullchain.pem and DIR/privkey.pem (default DIR nginx/certs, HOSTNAME localhost), the
# names Let's Encrypt's certbot uses, so production only swaps the files (README "Operations").
set -eu
dir=${1:-"$(dirname "$0")/certs"}
host=${2:-localhost}
mkdir -p "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 365 \
  -subj "/CN=${host}" \
  -addext "subjectAltName=DNS:${host},DNS:localhost,IP:127.0.0.1" \
  -keyout "$dir/privkey.pem" -out "$dir/fullchain.pem" 2>/dev/null
chmod 644 "$dir/fullchain.pem"
echo "wrote $dir/fullchain.pem and $dir/privkey.pem (self-signed for ${host}, 365 days)"
