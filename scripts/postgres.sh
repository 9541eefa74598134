#!/usr/bin/env bash
# A throwaway PostgreSQL 15 cluster on loopback for the tests (no systemd):
# installs Debian's postgresql-15 when missing, keeps the cluster in
# target/postgres, listens on 127.0.0.1:${TETHER_PG_PORT:-54329}.
# Usage: scripts/postgres.sh install|start|stop|restart|url
#   url    prints the connection URL the tests read (TETHER_TEST_POSTGRES)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$root/target/postgres
port=${TETHER_PG_PORT:-54329}
bin=/usr/lib/postgresql/15/bin

# initdb refuses to run as root: as root, the cluster belongs to `postgres`.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

install() {
  if [ ! -x "$bin/initdb" ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
  fi
}

start() {
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  fi
  if as_owner "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    return 0
  fi
  as_owner "$bin/pg_ctl" -D "$dir/data" -w -l "$dir/log" \
    -o "-k $dir -p $port -c listen_addresses=127.0.0.1 -c fsync=on -c max_connections=200" start >/dev/null
  as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qtAc \
    "SELECT 1 FROM pg_database WHERE datname = 'tether'" | grep -q 1 ||
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres tether
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) [ -f "$dir/data/PG_VERSION" ] && as_owner "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true ;;
  restart) as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w restart >/dev/null ;;
  url) echo "postgres://postgres@127.0.0.1:$port/tether" ;;
  *) echo "usage: $0 install|start|stop|restart|url" >&2; exit 2 ;;
esac
