#!/usr/bin/env bash
# Style gate of `make test`: clang-format (.clang-format, nginx's style)
# on the daemons, unit tests and tools/elearn-wsload.c; for the module, which follows nginx's own
# hand-aligned style that clang-format cannot express, the rules nginx
# itself checks: 80 columns, no tabs, no trailing blanks.  Also checks the
# generated SQL header is fresh.
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
rc=0
# the tools' C programs are checked even when no files are given
tools_c=()
for f in tools/elearn-wsload.c; do
    case " $* " in *" $f "*) ;; *) tools_c+=("$f") ;; esac
done
if [ $(($# + ${#tools_c[@]})) -gt 0 ] && [ -f .clang-format ]; then
    clang-format --dry-run -Werror "$@" "${tools_c[@]}" || rc=1
fi
for f in ngx_elearn_module/src/*.[ch]; do
    case $f in *_sql.h) continue ;; esac
    if grep -n -P '\t' "$f"; then echo "$f: tab" >&2; rc=1; fi
    if grep -n -P ' +$' "$f"; then echo "$f: trailing blank" >&2; rc=1; fi
    if awk 'length > 80 { print FILENAME ":" FNR ": over 80 columns"; bad=1 }
            END { exit bad }' "$f"; then :; else rc=1; fi
done
api_sql=$(ls sql/api.sql sql/api-*.sql 2>/dev/null | LC_ALL=C sort)
# shellcheck disable=SC2086
/usr/bin/python3 tools/sql2h.py --check \
    ngx_elearn_module/src/ngx_http_elearn_sql.h $api_sql || rc=1
[ $rc -eq 0 ] && echo "format-check: ok"
exit $rc
