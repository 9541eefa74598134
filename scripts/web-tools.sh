#!/usr/bin/env bash
# What building and testing the wasm32 client needs: the Rust target,
# wasm-bindgen-cli at exactly the wasm-bindgen version in Cargo.lock (its
# test runner drives the browser), Chromium and ChromeDriver.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
rustup target list --installed | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
want=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)
if [ "$have" != "$want" ]; then
  echo "installing wasm-bindgen-cli $want (found: ${have:-none}); several minutes"
  # --locked first; its lock names versions a registry mirror may not have.
  cargo install -q wasm-bindgen-cli --version "=$want" --locked \
    || cargo install -q wasm-bindgen-cli --version "=$want"
fi
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v chromedriver >/dev/null 2>&1 || missing="$missing chromium-driver"
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
