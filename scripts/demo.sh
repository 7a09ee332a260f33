#!/usr/bin/env bash
# make demo: nudge's whole loop on this machine, no cluster needed.
# A kubelet-style ConfigMap volume is updated exactly the way the kubelet does it (new
# timestamped dir, ..data_tmp link, atomic rename over ..data); nudge sees the swap, hashes the
# content, and sends SIGHUP to a small bundled app, which reloads and prints its new config.
set -euo pipefail
cd "$(dirname "$0")/.."
NUDGE=target/release/nudge
APP=target/release/examples/reload_app
[ -x "$NUDGE" ] && [ -x "$APP" ] || { echo "demo: run 'make demo' (it builds $NUDGE first)" >&2; exit 2; }

DEMO=$(mktemp -d /tmp/nudge-demo.XXXXXX)
VOL=$DEMO/config
cleanup() {
  kill "${NUDGE_PID:-}" "${APP_PID:-}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DEMO"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# The kubelet's update sequence (kubernetes pkg/volume/util/atomic_writer.go).
kubelet_write() { # kubelet_write KEY CONTENT
  local ts="..$(date -u +%Y_%m_%d_%H_%M_%S).$RANDOM$RANDOM" old=""
  mkdir -p "$VOL"
  old=$(readlink "$VOL/..data" 2>/dev/null || true)
  if [ -n "$old" ] && [ "$(cat "$VOL/..data/$1" 2>/dev/null)" = "$2" ]; then
    echo "   (kubelet: content unchanged, nothing written)"; return
  fi
  mkdir -m 0755 "$VOL/$ts"
  printf '%s' "$2" > "$VOL/$ts/$1"
  ln -s "$ts" "$VOL/..data_tmp"
  mv -T "$VOL/..data_tmp" "$VOL/..data"          # the atomic switch
  [ -e "$VOL/$1" ] || ln -s "..data/$1" "$VOL/$1"  # user-visible link, after the switch
  [ -z "$old" ] || rm -rf "${VOL:?}/$old"
  echo "   kubelet: ..data -> $ts"
}

app_reloads() { grep -c '^reload ' "$DEMO/app.log" 2>/dev/null || true; }
wait_reloads() { # wait until the app has reloaded N times (5 s at most)
  for _ in $(seq 500); do [ "$(app_reloads)" -ge "$1" ] && return 0; sleep 0.01; done
  echo "demo: the app did not reload (see the log above)" >&2; exit 1
}

say "1. a ConfigMap volume, written the way the kubelet writes it"
kubelet_write app.yaml "greeting: hello"
ls -la "$VOL" | sed 's/^/   /'

say "2. the app starts and reads its config (it reloads on SIGHUP, like nginx)"
"$APP" --config "$VOL" --log "$DEMO/app.log" 2>&1 | sed -u 's/^/   app   | /' &
APP_PID=$(pgrep -n -f "reload_app --config $VOL" || true)
for _ in $(seq 200); do grep -q '^ready' "$DEMO/app.log" 2>/dev/null && break; sleep 0.01; done
APP_PID=$(pgrep -f "reload_app --config $VOL" | head -n1)

say "3. nudge starts beside it: RELOAD_WATCH=$VOL RELOAD_PROCESS_REGEX='reload_app --config $VOL'"
# A regex on this demo's own app (not RELOAD_PROCESS=reload_app) so that no other copy running on
# this machine is signalled; the admin server takes any free port so the demo never clashes.
RELOAD_WATCH=$VOL RELOAD_PROCESS_REGEX="reload_app --config $VOL" RELOAD_LISTEN=127.0.0.1:0 \
  RELOAD_LOG_LEVEL=info "$NUDGE" 2>&1 | sed -u 's/^/   nudge | /' &
NUDGE_PID=$(pgrep -n -f "^$NUDGE" || true)
sleep 0.3
NUDGE_PID=$(pgrep -f "^$NUDGE\$" | head -n1 || true)
echo "   (no reload at start-up: the content found now is the baseline)"

say "4. the ConfigMap changes: one SIGHUP, the app reloads"
kubelet_write app.yaml "greeting: hello, world"
wait_reloads 1

say "5. the same content again: the kubelet writes nothing, nudge does nothing"
kubelet_write app.yaml "greeting: hello, world"
sleep 0.3

say "6. another change"
kubelet_write app.yaml "greeting: bonjour"
wait_reloads 2
sleep 0.2

say "done: 2 changes, $(app_reloads) reloads. Stopping nudge with SIGTERM."
kill -TERM "$NUDGE_PID" 2>/dev/null || true
sleep 0.2
