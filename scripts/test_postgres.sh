#!/usr/bin/env bash
# A throwaway PostgreSQL server for the sweep tests on a real RDB storage (tests/experiments/test_workers.py and
# test_claims.py). It listens on 127.0.0.1 only, keeps its data in a temporary folder, and is safe to run again.
#
#   eval "$(bash scripts/test_postgres.sh start)"   # install if missing, start (or reuse), print the export line
#   .venv/bin/python -m pytest tests/experiments -k postgresql
#   bash scripts/test_postgres.sh stop              # stop it and delete its folder
#
# `start` installs Debian's `postgresql` package where no server binaries are found (apt-get, as root or through
# sudo), then initdb's a cluster into $CONVMIXER_TEST_POSTGRES_DIR (default /tmp/convmixer-test-postgres-<uid>),
# owned by the `postgres` user when run as root (the server refuses to run as root), and starts it on
# $CONVMIXER_TEST_POSTGRES_PORT (default 55432). A server of that folder that already answers is reused; anything
# else found there (a killed server, another version's cluster) is removed first: the data is throwaway. It creates
# the role `convmixer` (password `convmixer`, allowed to create databases: each test makes its own and drops it)
# and its database `convmixer_test`. Only the export line goes to stdout:
#   export CONVMIXER_TEST_POSTGRES_URL=postgresql+psycopg2://convmixer:convmixer@127.0.0.1:55432/convmixer_test
set -euo pipefail

DIR=${CONVMIXER_TEST_POSTGRES_DIR:-/tmp/convmixer-test-postgres-$(id -u)}
PORT=${CONVMIXER_TEST_POSTGRES_PORT:-55432}
DATA="$DIR/data"
ROLE=convmixer PASSWORD=convmixer DB=convmixer_test
URL="postgresql+psycopg2://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
BIN=""

say() { echo "== $*" >&2; }

bindir() {  # the newest installed server's binaries (Debian keeps them off PATH)
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$d" ] && [ -x "$d/initdb" ]; then
    echo "$d"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  fi
}

as_owner() {  # run a server command as the cluster's owner, from a folder that user can read
  if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else (cd / && "$@"); fi
}

install_server() {
  [ -n "$(bindir)" ] && return
  command -v apt-get >/dev/null 2>&1 || { say "no PostgreSQL server found and no apt-get: install PostgreSQL"; exit 1; }
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
  say "installing PostgreSQL (Debian's postgresql package)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
  # where an init system runs, the package starts a cluster of its own (port 5432): none of this needs it
  if command -v pg_lsclusters >/dev/null 2>&1; then
    pg_lsclusters --no-header 2>/dev/null | awk '$4 == "online" {print $1, $2}' | while read -r ver name; do
      $sudo pg_ctlcluster "$ver" "$name" stop || true
    done
  fi
}

ready() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_isready" -q -h "$DIR" -p "$PORT"; }

sql() {  # a statement as the superuser, over the cluster's own Unix socket
  as_owner "$BIN/psql" -h "$DIR" -p "$PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

remove() {  # stop the server of $DATA if it runs (fast shutdown, else immediate), then delete $DIR
  if [ -n "$BIN" ] && [ -f "$DATA/postmaster.pid" ]; then
    as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t "$1" stop >/dev/null 2>&1 \
      || as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w -t 5 stop >/dev/null 2>&1 \
      || say "the server of $DATA did not stop (pid $(head -n 1 "$DATA/postmaster.pid" 2>/dev/null || true))"
  fi
  rm -rf "$DIR"
}

write_config() {  # loopback only; the Unix socket in $DIR (mode 700); no durability: the data is thrown away
  printf '%s\n' "listen_addresses = '127.0.0.1'" "port = $PORT" "unix_socket_directories = '$DIR'" \
    "fsync = off" "synchronous_commit = off" "full_page_writes = off" >>"$DATA/postgresql.conf"
}

start() {
  install_server
  BIN=$(bindir)
  [ -n "$BIN" ] || { say "PostgreSQL's server binaries not found after installing"; exit 1; }
  if ready; then
    say "PostgreSQL is already running on 127.0.0.1:$PORT ($DATA)"
  else
    remove 5
    mkdir -p "$DIR"
    if [ "$(id -u)" -eq 0 ]; then chown postgres: "$DIR"; fi
    chmod 700 "$DIR"
    say "creating a PostgreSQL cluster in $DATA"
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      --locale=C >/dev/null
    write_config
    say "starting $("$BIN/postgres" --version) on 127.0.0.1:$PORT"
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null; then
      tail -n 20 "$DIR/server.log" >&2 || true
      exit 1
    fi
  fi
  if [ "$(sql "select 1 from pg_roles where rolname = '$ROLE'")" != 1 ]; then
    sql "create role $ROLE login createdb password '$PASSWORD'"
  fi
  if [ "$(sql "select 1 from pg_database where datname = '$DB'")" != 1 ]; then
    sql "create database $DB owner $ROLE"
  fi
  echo "export CONVMIXER_TEST_POSTGRES_URL=$URL"
}

stop() {
  BIN=$(bindir)
  if [ -f "$DATA/postmaster.pid" ]; then say "stopping PostgreSQL on 127.0.0.1:$PORT"; fi
  remove 30
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) echo "$URL" ;;
  *) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac
