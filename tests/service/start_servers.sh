#!/usr/bin/env bash
# Install (if missing) and start the servers of the service's integration tests, on loopback only:
#   redis-server on 127.0.0.1:6379 (daemonized), PostgreSQL on 127.0.0.1:5432 with a database
#   quirkscope_test, its cluster initialised in a temporary directory and run as the user "postgres".
# Exports nothing. The tests find the servers through
#   QUIRKSCOPE_TEST_REDIS_URL=redis://127.0.0.1:6379/0
#   QUIRKSCOPE_TEST_DATABASE_URL=postgresql+psycopg2://quirkscope:quirkscope@127.0.0.1:5432/quirkscope_test
# and skip with a reason when those are unset. Idempotent: servers already answering are left alone.
# Usage: tests/service/start_servers.sh [stop]
set -euo pipefail

PGPORT="${PGPORT:-5432}"
REDIS_PORT="${REDIS_PORT:-6379}"
STATE_DIR="${QUIRKSCOPE_TEST_SERVERS_DIR:-/tmp/quirkscope-test-servers}"
PGDATA="$STATE_DIR/pgdata"
PGUSER_OS="${PGUSER_OS:-postgres}"

if [[ "${1:-}" == "stop" ]]; then
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave 2>/dev/null || true
  PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  [[ -n "$PGBIN" && -d "$PGDATA" ]] && su "$PGUSER_OS" -s /bin/sh -c "$PGBIN/pg_ctl -D '$PGDATA' -m fast stop" || true
  exit 0
fi

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian packages may start their own services on install; ours run on explicit loopback ports.

# --- Redis -------------------------------------------------------------------------------------------
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then
  mkdir -p "$STATE_DIR/redis"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --dir "$STATE_DIR/redis" --maxmemory-policy noeviction --logfile "$STATE_DIR/redis.log"
fi
for _ in $(seq 1 100); do redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.1; done
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping | grep -q PONG

# --- PostgreSQL ----------------------------------------------------------------------------------------
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --home-dir "$STATE_DIR" --shell /usr/sbin/nologin "$PGUSER_OS"
if ! "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q; then
  mkdir -p "$STATE_DIR"
  chmod 755 "$STATE_DIR"
  if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    rm -rf "$PGDATA"
    install -d -o "$PGUSER_OS" -m 700 "$PGDATA"
    su "$PGUSER_OS" -s /bin/sh -c "$PGBIN/initdb -D '$PGDATA' -U postgres --auth=trust -E UTF8 --no-locale" >/dev/null
  fi
  install -d -o "$PGUSER_OS" "$STATE_DIR/pgsock" "$STATE_DIR/pglog"
  su "$PGUSER_OS" -s /bin/sh -c "$PGBIN/pg_ctl -D '$PGDATA' -l '$STATE_DIR/pglog/postgres.log' -w -t 60 \
    -o \"-c listen_addresses=127.0.0.1 -p $PGPORT -k $STATE_DIR/pgsock -c fsync=off -c max_connections=200\" start" >/dev/null
fi
for _ in $(seq 1 100); do "$PGBIN/pg_isready" -h 127.0.0.1 -p "$PGPORT" -q && break; sleep 0.1; done
psql_su() { "$PGBIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
psql_su -c "SELECT 1 FROM pg_roles WHERE rolname='quirkscope'" | grep -q 1 \
  || psql_su -c "CREATE ROLE quirkscope LOGIN PASSWORD 'quirkscope'"
psql_su -c "SELECT 1 FROM pg_database WHERE datname='quirkscope_test'" | grep -q 1 \
  || psql_su -c "CREATE DATABASE quirkscope_test OWNER quirkscope"

echo "redis:      redis://127.0.0.1:$REDIS_PORT/0"
echo "postgresql: postgresql+psycopg2://quirkscope:quirkscope@127.0.0.1:$PGPORT/quirkscope_test"
