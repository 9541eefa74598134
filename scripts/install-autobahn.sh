#!/usr/bin/env bash
# Installs the Autobahn|Testsuite fuzzing server into $AUTOBAHN_ENV (default: target/autobahn-env).
# It needs Python 2.7: pyenv's 2.7.18 and a virtualenv release that can still create 2.7 environments.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
env_dir=${AUTOBAHN_ENV:-$root/target/autobahn-env}
if [ -x "$env_dir/py27/bin/wstest" ]; then
  echo "autobahn: already installed in $env_dir"
  exit 0
fi
py27=""
if command -v pyenv >/dev/null 2>&1; then
  cand="$(pyenv root)/versions/2.7.18/bin/python"
  [ -x "$cand" ] && py27=$cand
fi
if [ -z "$py27" ]; then
  for cand in /root/.pyenv/versions/2.7.18/bin/python "$(command -v python2.7 || true)"; do
    if [ -n "$cand" ] && [ -x "$cand" ]; then py27=$cand; break; fi
  done
fi
if [ -z "$py27" ]; then
  echo "autobahn: no Python 2.7 found (expected pyenv's 2.7.18); cannot install the fuzzing server" >&2
  exit 1
fi
mkdir -p "$env_dir"
python3 -m venv "$env_dir/py3"
"$env_dir/py3/bin/pip" install -q 'virtualenv<20.22'
"$env_dir/py3/bin/virtualenv" -q -p "$py27" "$env_dir/py27"
"$env_dir/py27/bin/pip" install -q txaio==2.1.0 incremental==16.10.1 pyOpenSSL==19.1.0 cryptography==3.3.2 \
  Twisted==19.10.0 zope.interface==4.6.0 jinja2==2.11.3 markupsafe==1.1.1 Werkzeug==1.0.1 klein==17.10.0 \
  service_identity==18.1.0 unittest2==1.1.0 six==1.16.0 'autobahn[twisted,accelerate]==0.10.9' autobahntestsuite==25.10.1
echo "autobahn: installed in $env_dir"
