#!/usr/bin/env bash
# The wasm32 client's tests in headless Chromium (wasm-bindgen-test through
# ChromeDriver) against a loopback echo server (Python websockets), then
# its lints. The tests read the server's URL at build time:
# TETHER_WEB_ECHO (default ws://127.0.0.1:9330/; the server's silent
# listener is two ports up) and TETHER_WEB_REFUSED, a port nobody listens
# on (default ws://127.0.0.1:9331/).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/web-tools.sh
python=target/peers/venv/bin/python
if [ ! -x "$python" ] || ! "$python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv target/peers/venv
  target/peers/venv/bin/pip install -q 'websockets>=13,<16'
fi
export TETHER_WEB_ECHO=${TETHER_WEB_ECHO:-ws://127.0.0.1:9330/}
export TETHER_WEB_REFUSED=${TETHER_WEB_REFUSED:-ws://127.0.0.1:9331/}
port=${TETHER_WEB_ECHO##*:}; port=${port%%/*}
log=$(mktemp)
"$python" scripts/peers/web_echo_server.py "$port" >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q ready "$log" && break; sleep 0.1; done
grep -q ready "$log" || { cat "$log"; echo "the echo server did not start"; exit 1; }
cargo clippy --target wasm32-unknown-unknown -p tether -p tether-web-example --lib --tests -- -D warnings
# The native build must not pull the browser's bindings, nor the browser
# build tokio's sockets or rustls.
if cargo tree -p tether -e normal | grep -qE 'web-sys|js-sys|wasm-bindgen'; then
  echo "the native build of tether depends on browser bindings"; exit 1
fi
if cargo tree -p tether -e normal --target wasm32-unknown-unknown -f '{p} {f}' | grep -E 'rustls|mio v|tokio v[^ ]+ .*net'; then
  echo "the wasm32 build of tether depends on native networking"; exit 1
fi
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver} \
  cargo test --target wasm32-unknown-unknown -p tether --test web
