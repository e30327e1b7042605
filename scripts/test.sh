#!/usr/bin/env bash
# Runs every test of the project: the Rust workspace (unit, integration and CLI tests), then the
# Python, Node and grpcurl suites against the real server binary. This is the README's test
# command; .ci/run calls it after its checks.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== Rust: cargo test --workspace"
cargo test --workspace

echo "== Python, Node and grpcurl against the real server"
bash clients/run-tests.sh
