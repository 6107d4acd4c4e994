#!/usr/bin/env bash
# `make bench`: starts the platform with the full demo data set (as `make
# run DEMO=full`) and runs tools/bench.py against it.
set -euo pipefail
ELEARN_TOP=$(cd "$(dirname "$0")/.." && pwd)
export ELEARN_TOP
. "$ELEARN_TOP/config/elearn.env"
DEMO=full "$ELEARN_TOP/tools/run.sh" >/dev/null
exec /usr/bin/python3 "$ELEARN_TOP/tools/bench.py"
