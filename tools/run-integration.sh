#!/usr/bin/env bash
# Runs the pytest integration suite against the stack that its conftest
# starts (var/test, ports of its own).  Extra arguments go to pytest.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
if [ "${ELEARN_ASAN:-}" = 1 ]; then
    # the stock nginx is not instrumented: preload the runtime for the module
    ELEARN_NGINX_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    export ELEARN_NGINX_PRELOAD
    v=$top/var/test-asan            # the harness's var/ (ELEARN_TEST_VAR)
    export ELEARN_TEST_VAR=$v
    mkdir -p "$v/sanitizer"
    chmod 1777 "$v/sanitizer"   # nginx workers run as another user
    rm -f "$v"/sanitizer/*
    # a report left in the log by an earlier run is not this run's
    if [ -f "$v/nginx/logs/error.log" ]; then
        : > "$v/nginx/logs/error.log"
    fi
    # reports go to files that the harness checks at the end of the run
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:log_path=$v/sanitizer/asan}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:log_path=$v/sanitizer/ubsan}"
fi
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -rfEs \
    tests/integration "$@"
