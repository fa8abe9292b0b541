#!/usr/bin/env bash
# Restore a dump made by scripts/backup.sh into a NEW database; the live one is never touched.
#
#   scripts/restore.sh FILE TARGET_URL     # TARGET_URL: postgresql://user@host:port/new_name
#
# The target database must not exist: it is created, the dump restored into it in one
# transaction (all or nothing), and the rows of the main tables counted. Point DATABASE_URL at
# it (and restart the app) to switch over.
set -euo pipefail

file="${1:-}"
target="${2:-}"
if [[ -z "$file" || -z "$target" ]]; then
  echo "usage: restore.sh FILE TARGET_URL   (make restore BACKUP=FILE RESTORE_DATABASE_URL=URL)" >&2
  exit 2
fi
if [[ ! -f "$file" ]]; then
  echo "restore: no such dump: $file" >&2
  exit 2
fi
target="${target/postgresql+psycopg2:\/\//postgresql://}"
if [[ "$target" != postgres://* && "$target" != postgresql://* ]]; then
  echo "restore: the target must be a postgresql:// URL" >&2
  exit 2
fi

# The server's maintenance database: the same URL with the database name replaced by `postgres`.
base="${target%%\?*}"
query=""
[[ "$target" == *\?* ]] && query="?${target#*\?}"
name="${base##*/}"
admin="${base%/*}/postgres${query}"
if [[ -z "$name" || "$name" == "$base" ]]; then
  echo "restore: the target URL names no database: $target" >&2
  exit 2
fi
if [[ ! "$name" =~ ^[A-Za-z0-9_]+$ ]]; then
  echo "restore: use a database name of letters, digits and underscores: $name" >&2
  exit 2
fi

exists=$(psql "$admin" -XtAc "SELECT 1 FROM pg_database WHERE datname = '$name'")
if [[ "$exists" == "1" ]]; then
  echo "restore: database $name already exists; restore into a new one (or drop it first)" >&2
  exit 1
fi
psql "$admin" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$name\""
if ! pg_restore --no-owner --no-privileges --exit-on-error --single-transaction --dbname="$target" "$file"; then
  echo "restore: pg_restore failed; dropping the half-made database $name" >&2
  psql "$admin" -X -q -c "DROP DATABASE IF EXISTS \"$name\"" || true
  exit 1
fi
echo "restore: $file restored into $name"
psql "$target" -X -q -c "SELECT (SELECT count(*) FROM users) AS users, (SELECT count(*) FROM products) AS products,
  (SELECT count(*) FROM orders) AS orders, (SELECT count(*) FROM order_items) AS order_items"
