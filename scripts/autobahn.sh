#!/usr/bin/env bash
# Runs the Autobahn|Testsuite fuzzing server against tether's client and
# fails unless every case is OK, NON-STRICT or INFORMATIONAL.
#
#   scripts/autobahn.sh            every case (about 13 minutes on 2 cores)
#   scripts/autobahn.sh --quick    without 12.* and 13.* (compression; about 1 minute)
#
# Reports land in target/autobahn/reports/clients (index.html for people,
# index.json for the check below).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
exclude='[]'
if [ "${1:-}" = "--quick" ]; then
  exclude='["12.*", "13.*"]'
fi
port=${AUTOBAHN_PORT:-9001}
work=$root/target/autobahn
mkdir -p "$work"
rm -rf "$work/reports"

scripts/install-autobahn.sh
cargo build --release -p tether --example autobahn_client

cat > "$work/spec.json" <<JSON
{"url": "ws://127.0.0.1:$port", "outdir": "./reports/clients", "cases": ["*"],
 "exclude-cases": $exclude, "exclude-agent-cases": {}}
JSON

(cd "$work" && exec "$root/target/autobahn-env/py27/bin/wstest" -m fuzzingserver -s spec.json -u 0) > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then break; fi
  sleep 0.2
done

start=$(date +%s)
target/release/examples/autobahn_client "ws://127.0.0.1:$port" tether
echo "autobahn: client run took $(( $(date +%s) - start )) s"

python3 - "$work/reports/clients/index.json" <<'PY'
import json, sys
from collections import Counter
data = json.load(open(sys.argv[1]))
cases = data["tether"]
ok = {"OK", "NON-STRICT", "INFORMATIONAL"}
behavior = Counter(c["behavior"] for c in cases.values())
close = Counter(c["behaviorClose"] for c in cases.values())
print("autobahn: %d cases; behavior %s; behaviorClose %s" % (len(cases), dict(behavior), dict(close)))
bad = sorted((k for k, c in cases.items() if c["behavior"] not in ok or c["behaviorClose"] not in ok),
             key=lambda k: [int(p) for p in k.split(".")])
for k in bad:
    print("  FAILED %s: behavior=%s behaviorClose=%s" % (k, cases[k]["behavior"], cases[k]["behaviorClose"]))
sys.exit(1 if bad else 0)
PY
