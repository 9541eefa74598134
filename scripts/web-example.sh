#!/usr/bin/env bash
# Builds the web example (examples/web: the tether client compiled to
# wasm32) and serves it with its ticker feed on loopback:
#
#   scripts/web-example.sh          http://127.0.0.1:8330/ (feed on 8331), until Ctrl-C
#   scripts/web-example.sh --check  also loads it in headless Chromium, sees live
#                                   ticks, restarts the feed, sees the reconnect
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
port=${TETHER_WEB_EXAMPLE_PORT:-8330}

scripts/web-tools.sh
CARGO_PROFILE_RELEASE_DEBUG=0 cargo build --release --target wasm32-unknown-unknown -p tether-web-example
wasm-bindgen --target web --out-dir examples/web/pkg \
  target/wasm32-unknown-unknown/release/tether_web_example.wasm
python=target/peers/venv/bin/python
if [ ! -x "$python" ] || ! "$python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv target/peers/venv
  target/peers/venv/bin/pip install -q 'websockets>=13,<16'
fi

if [ "${1:-}" != "--check" ]; then
  exec "$python" scripts/peers/ticker_server.py examples/web "$port"
fi
if [ ! -f target/peers/node_modules/playwright-core/package.json ]; then
  (mkdir -p target/peers && cd target/peers && npm install --silent --no-audit --no-fund playwright-core@1 >/dev/null)
fi
node scripts/web-example-check.mjs "$python" "$port"
