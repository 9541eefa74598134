#!/usr/bin/env bash
# The project's test command: installs the third-party peers the tests talk
# to, starts the message brokers (RabbitMQ, Mosquitto) and a throwaway
# PostgreSQL 15 on loopback, checks
# formatting and lints, runs every crate's tests, the wasm32 client's
# tests and the web example in headless Chromium, then the
# web UI test in headless Chromium, then the full Autobahn|Testsuite client
# conformance suite.
#
#   scripts/test.sh           everything (about 25 minutes on 2 cores from a fresh clone)
#   scripts/test.sh --quick   Autobahn without the compression groups 12 and 13
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

scripts/install-peers.sh
scripts/brokers.sh install
scripts/brokers.sh start
scripts/postgres.sh install
trap 'scripts/brokers.sh stop; scripts/postgres.sh stop' EXIT
scripts/postgres.sh start
# The broker and PostgreSQL tests fail, rather than skip, when their server
# is missing.
export TETHER_REQUIRE_BROKERS=1 TETHER_REQUIRE_POSTGRES=1
TETHER_TEST_POSTGRES=$(scripts/postgres.sh url)
export TETHER_TEST_POSTGRES
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
# The wasm32 client in headless Chromium, and the web example's page.
scripts/web-test.sh
scripts/web-example.sh --check
cargo build -p tether-cli
# Three nodes on one PostgreSQL, each fault once (the full form repeats
# each three times: drop --quick).
"$root/target/peers/venv/bin/python" scripts/cluster-faults.py --quick \
  --tether target/debug/tether --pg "$TETHER_TEST_POSTGRES" --pg-ctl scripts/postgres.sh
node scripts/ui-test.mjs
scripts/autobahn.sh "$@"
