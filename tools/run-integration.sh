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
    export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0:log_path=$top/var/test/asan}"
    export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:log_path=$top/var/test/ubsan}"
    export ELEARN_VAR="$top/var/test-asan"
fi
exec /usr/bin/python3 -m pytest -p no:cacheprovider -q -rfEs \
    tests/integration "$@"
