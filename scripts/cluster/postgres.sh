#!/usr/bin/env bash
# A local PostgreSQL for Optuna studies shared by several jobs, for tests and CI: one cluster
# initialised in a state folder, listening on 127.0.0.1 and a unix socket in that folder only,
# with one database (optuna) that the local user reaches without a password.
#
#   scripts/cluster/postgres.sh start [STATE_DIR]   initdb once, start (or find running), wait until ready
#   scripts/cluster/postgres.sh stop  [STATE_DIR]   stop it (fast shutdown); the data is kept
#   scripts/cluster/postgres.sh status [STATE_DIR]  exit 0 when it accepts connections
#   scripts/cluster/postgres.sh url   [STATE_DIR]   the SQLAlchemy URL: tune.storage=<this>
#
# STATE_DIR defaults to $RNNLAB_POSTGRES_DIR, else /tmp/rnnlab-postgres; the port is
# $RNNLAB_POSTGRES_PORT (default 5439). Needs Debian's postgresql (apt-get install postgresql);
# as root the server runs as the user `postgres`, which owns the folder.
set -euo pipefail

action=${1:-}
state=${2:-${RNNLAB_POSTGRES_DIR:-/tmp/rnnlab-postgres}}
port=${RNNLAB_POSTGRES_PORT:-5439}
data="$state/data"
WAIT_S=30

die() { echo "postgres.sh: $*" >&2; exit 1; }

bindir() {  # Debian keeps the server tools out of PATH, under /usr/lib/postgresql/<version>/bin
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -n "$found" ] && [ -x "$found/pg_ctl" ]; then echo "$found"; return; fi
  command -v pg_ctl >/dev/null || die "pg_ctl not found: apt-get install postgresql"
  dirname "$(command -v pg_ctl)"
}

as_owner() {  # PostgreSQL refuses to run as root
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

user() { if [ "$(id -u)" -eq 0 ]; then echo postgres; else id -un; fi; }

ready() { as_owner "$(bindir)/pg_isready" -q -h "$state" -p "$port"; }

start() {
  local bin; bin=$(bindir)
  mkdir -p "$state"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$state"
  if [ ! -s "$data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$data" -A trust -U "$(user)" -E UTF8 --locale=C.UTF-8 >"$state/initdb.log"
  fi
  if ! ready; then
    as_owner "$bin/pg_ctl" -D "$data" -l "$state/postgres.log" -w -t "$WAIT_S" \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $state -c max_connections=100 -c fsync=off" start >/dev/null
  fi
  ready || die "not ready after ${WAIT_S}s; log in $state/postgres.log"
  if ! as_owner "$bin/psql" -h "$state" -p "$port" -d postgres -tAc "select 1 from pg_database where datname='optuna'" | grep -q 1; then
    as_owner "$bin/createdb" -h "$state" -p "$port" optuna
  fi
  echo "postgres: ready ($(url))"
}

stop() {
  [ -s "$data/postmaster.pid" ] || return 0
  as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w -t "$WAIT_S" stop >/dev/null || true
  echo "postgres: stopped ($state)"
}

url() { echo "postgresql+psycopg2://$(user)@127.0.0.1:$port/optuna"; }

case "$action" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  url) url ;;
  *) die "usage: $0 start|stop|status|url [STATE_DIR]" ;;
esac
