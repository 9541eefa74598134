#!/usr/bin/env bash
# Installs the third-party WebSocket peers that the interop tests talk to,
# into target/peers: Python websockets (a venv) and Node ws (npm).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=$root/target/peers
mkdir -p "$peers"
if [ ! -x "$peers/venv/bin/python" ] || ! "$peers/venv/bin/python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install -q 'websockets>=13,<16'
fi
if [ ! -f "$peers/node_modules/ws/package.json" ]; then
  (cd "$peers" && npm install --silent --no-audit --no-fund ws@8 >/dev/null)
fi
echo "peers: python websockets $("$peers/venv/bin/python" -c 'import websockets; print(websockets.__version__)'), node ws $(node -p "require('$peers/node_modules/ws/package.json').version")"
