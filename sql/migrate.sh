#!/usr/bin/env bash
# Applies the numbered migrations in sql/migrations/ (NNNN_<name>.sql) to
# elearn's PostgreSQL database, each in its own transaction, and records
# them in schema_migrations (version, name, sha256 checksum, applied_at).
#
#   sql/migrate.sh [conninfo]
#
# The connection comes from the standard PG* variables: config/elearn.env
# sets them from ELEARN_PG_* (as tools/stack.sh does); PG* variables the
# caller exported win over the config, and a libpq conninfo string or URI
# given as the only argument wins over both.
#
# Rules it enforces, and must never relax:
#   - an applied migration is never edited: if its checksum changed the run
#     stops with an error before applying anything (write a new migration);
#   - an applied version with no file in the tree is an error (the database
#     is newer than this checkout);
#   - a migration runs inside one transaction (psql --single-transaction),
#     so it must not contain BEGIN/COMMIT or anything that refuses to run in
#     a transaction block (CREATE INDEX CONCURRENTLY...).
# Two runners at once are safe: every step takes the same transaction-level
# advisory lock and re-checks under it whether the version is still pending,
# so the loser of a race skips what the winner applied.  A second run with
# nothing new prints "nothing to do" and changes nothing.
set -euo pipefail

ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP

# Keep PG* the caller set explicitly; config/elearn.env overwrites them.
saved=$(export -p | grep -E '^declare -x PG[A-Z]*=' || true)
# shellcheck source=../config/elearn.env
. "$ELEARN_TOP/config/elearn.env"
eval "$saved"

DIR=$ELEARN_TOP/sql/migrations
# "elearn-migrate" as a 64-bit advisory lock key (any fixed value works;
# it only has to be the same for every runner).
LOCK_KEY=7216039871455240001
export PGAPPNAME=elearn-migrate

conn=()
[ $# -ge 1 ] && conn=(-d "$1")

log() { echo "migrate: $*" >&2; }
die() { echo "migrate: ERROR: $*" >&2; exit 1; }

psql_q() {   # read-only helper: unaligned, tuples only, stop on error
    psql -X -q -At -v ON_ERROR_STOP=1 "${conn[@]}" "$@"
}

# --- the migration files -----------------------------------------------------

declare -A file_of=() name_of=() sum_of=()
versions=()
shopt -s nullglob
for f in "$DIR"/*.sql; do
    base=$(basename "$f" .sql)
    [[ $base =~ ^([0-9]{4})_([a-z0-9_]+)$ ]] \
        || die "bad migration file name $f (want NNNN_lowercase_name.sql)"
    v=$((10#${BASH_REMATCH[1]}))
    [ -z "${file_of[$v]:-}" ] \
        || die "two migrations with version $v: ${file_of[$v]} and $f"
    file_of[$v]=$f
    name_of[$v]=${BASH_REMATCH[2]}
    sum_of[$v]=$(sha256sum "$f" | cut -d' ' -f1)
    versions+=("$v")
done
mapfile -t versions < <(printf '%s\n' "${versions[@]}" | sort -n)
[ ${#versions[@]} -gt 0 ] || die "no migrations in $DIR"

# --- bookkeeping table (under the lock: concurrent CREATE TABLE IF NOT
# EXISTS can otherwise fail on the catalog's unique index) -----------------

psql_q --single-transaction <<SQL >/dev/null
SET client_min_messages = warning;
SELECT pg_advisory_xact_lock($LOCK_KEY);
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
SQL

# --- refuse edited or unknown applied migrations ------------------------------

declare -A applied=()
while IFS='|' read -r v name sum; do
    [ -n "$v" ] || continue
    applied[$v]=1
    f=${file_of[$v]:-}
    [ -n "$f" ] || die "version $v ($name) is applied in the database but" \
        "has no file in $DIR: this checkout is older than the database"
    [ "$sum" = "${sum_of[$v]}" ] || die "$(basename "$f") was changed after" \
        "it was applied (recorded sha256 $sum, file now ${sum_of[$v]});" \
        "applied migrations are immutable: restore it and add a new migration"
done < <(psql_q -c "SELECT version, name, checksum FROM schema_migrations
                     ORDER BY version")

# --- apply what is pending ---------------------------------------------------

n=0
for v in "${versions[@]}"; do
    [ -z "${applied[$v]:-}" ] || continue
    f=${file_of[$v]}
    log "applying $(basename "$f")"
    # \if re-checks under the lock: another runner may have applied it
    # since the list above was read.
    out=$(psql -X -q -v ON_ERROR_STOP=1 --single-transaction "${conn[@]}" \
            -v mfile="$f" -v mver="$v" -v mname="${name_of[$v]}" \
            -v msum="${sum_of[$v]}" 2>&1 <<SQL
SELECT pg_advisory_xact_lock($LOCK_KEY) AS locked \gset
SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE version = :mver)
       AS already \gset
\if :already
\echo elearn-migrate-skipped
\else
\i :mfile
INSERT INTO schema_migrations (version, name, checksum, applied_at)
VALUES (:mver, :'mname', :'msum', now());
\endif
SQL
    ) || { printf '%s\n' "$out" >&2; die "$(basename "$f") failed; rolled back"; }
    if grep -q '^elearn-migrate-skipped$' <<<"$out"; then
        log "$(basename "$f") was applied meanwhile by another runner"
    else
        [ -z "$out" ] || printf '%s\n' "$out" >&2
        n=$((n + 1))
    fi
done

if [ $n -eq 0 ]; then
    log "nothing to do (${#versions[@]} migrations, all applied)"
else
    log "applied $n migration(s)"
fi
