#!/usr/bin/env bash
# Dump the shop's PostgreSQL database in pg_dump's custom format (compressed, restorable table by table).
#
#   scripts/backup.sh [FILE]        # default: backups/shop-<UTC time>.dump
#
# The database is DATABASE_URL (postgresql://user[:password]@host:port/name). The dump is a
# consistent snapshot taken while the shop keeps serving; it holds no lock that blocks orders.
set -euo pipefail

url="${DATABASE_URL:-}"
if [[ -z "$url" ]]; then
  echo "backup: set DATABASE_URL to the PostgreSQL database to dump (e.g. postgresql://postgres@127.0.0.1:5432/shop)" >&2
  exit 2
fi
url="${url/postgresql+psycopg2:\/\//postgresql://}"
if [[ "$url" != postgres://* && "$url" != postgresql://* ]]; then
  echo "backup: DATABASE_URL is not PostgreSQL ($url); pg_dump backs up PostgreSQL only" >&2
  exit 2
fi

file="${1:-backups/shop-$(date -u +%Y%m%dT%H%M%SZ).dump}"
mkdir -p "$(dirname "$file")"
tmp="$file.partial"
trap 'rm -f "$tmp"' EXIT
# --no-owner/--no-privileges: the dump restores under whatever role restores it.
pg_dump --format=custom --no-owner --no-privileges --file="$tmp" --dbname="$url"
mv "$tmp" "$file"
trap - EXIT
echo "backup: wrote $file ($(du -h "$file" | cut -f1)); restore with: make restore BACKUP=$file RESTORE_DATABASE_URL=..."
