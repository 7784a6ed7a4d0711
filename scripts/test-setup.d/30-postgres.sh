# PostgreSQL for the gateway's store tests (issue 3 and 6): uses the server on 127.0.0.1:5432 when
# it answers, else starts a throwaway cluster (initdb into a temporary directory, a free port,
# trust authentication on 127.0.0.1 only) and stops and deletes it at exit.
# Exports IPHR_TEST_PG_URL: a database URL whose role may CREATE DATABASE (each test makes its own).
pg_bin_dir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && { echo "$d"; return 0; }; done
  command -v initdb >/dev/null 2>&1 && { dirname "$(command -v initdb)"; return 0; }
  return 1
}
if [ -n "${IPHR_TEST_PG_URL:-}" ]; then
  echo "using IPHR_TEST_PG_URL from the environment" >&2
elif pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null \
  && psql -h 127.0.0.1 -p 5432 -U "$(id -un)" -d postgres -tAc 'SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null | grep -q t; then
  export IPHR_TEST_PG_URL="postgres://$(id -un)@127.0.0.1:5432/postgres"
  echo "PostgreSQL on 127.0.0.1:5432 answers; using it" >&2
else
  apt_install postgresql postgresql-client
  PG_BIN="$(pg_bin_dir)" || { echo "initdb not found after installing postgresql" >&2; exit 1; }
  PG_TMP="$(mktemp -d /tmp/iphr-pg.XXXXXX)"
  PG_PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  PG_USER=iphr
  # initdb refuses to run as root: run the cluster as the owner of the directory.
  PG_RUN=()
  if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
    chown postgres "$PG_TMP"
    PG_RUN=(runuser -u postgres --)
  fi
  "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_TMP/data" -U "$PG_USER" --auth=trust -E UTF8 >"$PG_TMP/initdb.log" 2>&1 \
    || { cat "$PG_TMP/initdb.log" >&2; exit 1; }
  "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/server.log" -w -t 60 \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_TMP -c max_connections=300 -c fsync=off" start >/dev/null \
    || { cat "$PG_TMP/server.log" >&2; exit 1; }
  IPHR_CLEANUP+=("${PG_RUN[*]} $PG_BIN/pg_ctl -D $PG_TMP/data -m fast -w stop >/dev/null; rm -rf $PG_TMP")
  wait_for 30 pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || { echo "throwaway PostgreSQL did not come up" >&2; exit 1; }
  export IPHR_TEST_PG_URL="postgres://$PG_USER@127.0.0.1:$PG_PORT/postgres"
  echo "started a throwaway PostgreSQL on port $PG_PORT ($PG_TMP)" >&2
fi
