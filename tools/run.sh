#!/usr/bin/env bash
# `make run`: the whole platform on loopback with demo data.  Safe to run
# again: what is up stays up, migrations already applied are skipped and
# the demo data is reloaded only when missing.  DEMO=full loads the full
# benchmark set (100,000 courses).
set -euo pipefail

ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP
. "$ELEARN_TOP/config/elearn.env"

"$ELEARN_TOP/tools/stack.sh" start pg redis kafka
"$ELEARN_TOP/sql/migrate.sh"

want=2000
[ "${DEMO:-small}" = full ] && want=100000
have=$(psql -Atqc "SELECT count(*) FROM courses")
if [ "$have" -lt "$want" ]; then
    /usr/bin/python3 "$ELEARN_TOP/tools/demo-data.py" "--${DEMO:-small}"
fi

"$ELEARN_TOP/tools/stack.sh" start outbox nginx
# the write-behind of video progress (after the migrations)
"$ELEARN_TOP/tools/stack.sh" start progress

for i in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$ELEARN_HTTP_PORT/readyz" >/dev/null 2>&1 \
        && break
    sleep 0.2
done

cat <<MSG

elearn is running on loopback:
  API         http://127.0.0.1:$ELEARN_HTTP_PORT/api/v1/  (log in first:
              POST /api/v1/auth/login {"email", "password"}, then
              Authorization: Bearer <accessToken>)
  health      http://127.0.0.1:$ELEARN_HTTP_PORT/healthz
  readiness   http://127.0.0.1:$ELEARN_HTTP_PORT/readyz
  metrics     http://127.0.0.1:$ELEARN_HTTP_PORT/metrics
  PostgreSQL  127.0.0.1:$ELEARN_PG_PORT (database $ELEARN_PG_DB, user $ELEARN_PG_USER)
  Redis       127.0.0.1:$ELEARN_REDIS_PORT
  Kafka       $ELEARN_KAFKA_BROKERS
  progress    elearn-progress, metrics http://127.0.0.1:$ELEARN_PROGRESS_METRICS_PORT/metrics
Demo accounts (dev only): student@elearn.dev / student-dev-pass,
  instructor@elearn.dev / instructor-dev-pass, admin@elearn.dev / admin-dev-pass
Stop it all with: make stop
MSG
"$ELEARN_TOP/tools/stack.sh" status
