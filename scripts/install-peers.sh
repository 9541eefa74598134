#!/usr/bin/env bash
# Installs the third-party WebSocket peers that the interop tests talk to,
# into target/peers: Python websockets (a venv) and Node ws (npm).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers=$root/target/peers
mkdir -p "$peers"
# nginx (TLS terminator), squid and tinyproxy (CONNECT proxies), dante (SOCKS5);
# python3 (the crash test checks SQLite integrity with it) and procps (kill,
# for the signal tests).
missing=""
for pair in nginx:nginx-light squid:squid tinyproxy:tinyproxy danted:dante-server openssl:openssl chromium:chromium node:nodejs npm:npm python3:python3; do
  bin=${pair%%:*}; pkg=${pair#*:}
  command -v "$bin" >/dev/null 2>&1 || [ -x "/usr/sbin/$bin" ] || missing="$missing $pkg"
done
# kill is also a shell builtin: look for the program.
[ -x /usr/bin/kill ] || [ -x /bin/kill ] || missing="$missing procps"
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
if [ ! -x "$peers/venv/bin/python" ] || ! "$peers/venv/bin/python" -c 'import websockets' 2>/dev/null; then
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install -q 'websockets>=13,<16'
fi
if [ ! -x "$peers/venv/bin/pproxy" ]; then
  "$peers/venv/bin/pip" install -q 'pproxy==2.7.9'
fi
if [ ! -f "$peers/node_modules/ws/package.json" ] || [ ! -f "$peers/node_modules/playwright-core/package.json" ]; then
  (cd "$peers" && npm install --silent --no-audit --no-fund ws@8 playwright-core@1 >/dev/null)
fi
echo "peers: python websockets $("$peers/venv/bin/python" -c 'import websockets; print(websockets.__version__)'), node ws $(node -p "require('$peers/node_modules/ws/package.json').version")"
