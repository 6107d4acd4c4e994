#!/usr/bin/env bash
# `make bench`: starts the platform with the full demo data set (as `make
# run DEMO=full`) and runs tools/bench.py against it, then the WebSocket
# scenario (tools/bench-ws.sh: live sessions against nchan, issue 6).
#
# BENCH_ONLY=search: only bench.py's search scenarios; BENCH_ONLY=peer:
# only issue 5's Lua peer against elearn; BENCH_ONLY=ws: only the
# WebSocket scenario; BENCH_SKIP=ws: everything but it.
set -euo pipefail
ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP
. "$ELEARN_TOP/config/elearn.env"
DEMO=full "$ELEARN_TOP/tools/run.sh" >/dev/null
if [ "${BENCH_ONLY:-}" != ws ]; then
    /usr/bin/python3 "$ELEARN_TOP/tools/bench.py"
fi
case ${BENCH_ONLY:-}:${BENCH_SKIP:-} in
    :ws | search:* | peer:*) ;;
    *) "$ELEARN_TOP/tools/bench-ws.sh" ;;
esac
