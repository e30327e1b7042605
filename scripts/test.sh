#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration and CLI tests), then the
# Python, Node, grpcurl and browser suites against the real server binary. This is the README's
# test command; .ci/run calls it after its checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster backend's tests run etcd (jsonkv-testkit starts it on free loopback ports, never on
# the 2379 of any etcd service the package may start): Debian's etcd-server, installed if missing,
# as bench/compare.sh does. The web console's browser tests drive Debian's Chromium (through npm's
# playwright-core).
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]} (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== Rust: cargo test --workspace"
cargo test --workspace

echo "== Python, Node, grpcurl and the console in Chromium, against the real server"
bash clients/run-tests.sh
