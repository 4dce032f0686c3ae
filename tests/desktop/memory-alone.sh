#!/usr/bin/env bash
# Private memory of ONE desktop app alone (no second app sharing library
# pages), at its first screen, 15 s after start: a quick way to compare one
# setting against another (each run ~20 s; no Keycloak, no login). The
# figure of record is the desktop E2E's report (docs/measurements.md).
#
#   tests/desktop/memory-alone.sh APP_BINARY [RUNS]
#   VAR=value tests/desktop/memory-alone.sh APP_BINARY   # try a setting
#   JIT_MEMORY_CACHE_HOME=DIR tests/desktop/memory-alone.sh APP_BINARY
#       # XDG_CACHE_HOME kept in DIR across runs: the first run fills Mesa's
#       # shader cache, later runs are warm starts (as every start of a real
#       # user but the first); without it every run is a first start.
#
# Prints per run: private MiB (Private_Clean + Private_Dirty of
# /proc/PID/smaps_rollup) of the app, WebKitNetworkProcess,
# WebKitWebProcess and their sum, and whether the web process has loaded
# the app's extension (libjit_desktop_webext.so, crates/jit-desktop-webext).
# Needs xvfb-run and dbus-run-session.
set -euo pipefail
if [ "${1:-}" = "--inner" ]; then
    app=$2
    work=$(mktemp -d)
    export XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config
    export XDG_CACHE_HOME=${JIT_MEMORY_CACHE_HOME:-$work/cache}
    export NO_AT_BRIDGE=1 JIT_SERVER=http://127.0.0.1:9
    "$app" >"$work/app.log" 2>&1 &
    pid=$!
    sleep 15
    private() { awk '/^Private_(Clean|Dirty):/ {s += $2} END {printf "%.1f", s / 1024}' "/proc/$1/smaps_rollup"; }
    kids=$(pgrep -P "$pid" || true)
    net=0 web=0 ext=no
    for k in $kids; do
        case "$(cat "/proc/$k/comm")" in
            WebKitNetworkPr*) net=$(private "$k") ;;
            WebKitWebProces*)
                web=$(private "$k")
                if grep -q '/libjit_desktop_webext\.so$' "/proc/$k/maps"; then ext=yes; fi
                ;;
        esac
    done
    app_mib=$(private "$pid")
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$work"
    awk -v a="$app_mib" -v n="$net" -v w="$web" -v e="$ext" \
        'BEGIN { printf "app %s  network %s  web %s  total %.1f MiB  (web extension loaded: %s)\n", a, n, w, a + n + w, e }'
    exit 0
fi
app=$(realpath "${1:?usage: $0 APP_BINARY [RUNS]}")
for _ in $(seq "${2:-3}"); do
    xvfb-run -a -s "-screen 0 1280x800x24" dbus-run-session "$0" --inner "$app" 2>/dev/null | grep '^app '

done
