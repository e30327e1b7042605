#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration and CLI tests), then the
# Python, Node and grpcurl suites against the real server binary. This is the README's test
# command; .ci/run calls it after its checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# The cluster backend's tests run etcd (jsonkv-testkit starts it on free loopback ports, never on
# the 2379 of any etcd service the package may start): Debian's etcd-server, installed if missing,
# as bench/compare.sh does.
if ! command -v etcd >/dev/null; then
  echo "== installing etcd-server (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi

echo "== Rust: cargo test --workspace"
cargo test --workspace

echo "== Python, Node and grpcurl against the real server"
bash clients/run-tests.sh
