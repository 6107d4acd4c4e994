#!/usr/bin/env bash
# Installs the Debian packages listed in config/debian-packages.txt that are
# not installed yet.  Idempotent and quiet when nothing is missing, so every
# make target can call it.  Needs root (or sudo) only when something is
# missing.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
list="$top/config/debian-packages.txt"

missing=()
while read -r pkg; do
    case "$pkg" in ''|'#'*) continue ;; esac
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null \
         | grep -q 'install ok installed'; then
        missing+=("$pkg")
    fi
done < "$list"

# Node packages of the tests (the ws library for WebSocket interop), from
# tools/node/package-lock.json into tools/node/node_modules
node_deps() {
    local nd="$top/tools/node"
    [ -d "$nd/node_modules/ws" ] && return 0
    if ! command -v npm >/dev/null 2>&1; then
        echo "deps: npm not found: the WebSocket interop test needs Node" >&2
        return 0
    fi
    echo "deps: npm ci in tools/node"
    (cd "$nd" && npm ci --no-audit --no-fund --loglevel=error)
}
node_deps

[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
# policy-rc.d stops the packages' own services (system nginx, redis,
# postgresql) from starting: elearn runs its own instances under var/.
prc=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$prc" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$prc" >/dev/null
    $sudo chmod +x "$prc"
    created=1
fi
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
[ $created -eq 1 ] && $sudo rm -f "$prc"
exit 0
