#!/usr/bin/env bash
# Runs the Node client's checks against the installed package, never the source folder: packs
# it (`npm pack`, which bundles the proto), installs the tarball into an empty project in a
# temporary folder, and from there checks the version against the server's, type-checks the
# TypeScript examples (tsc --noEmit), then starts jsonkv-server on a free port and runs the smoke
# program, the TypeScript examples and the `node --test` suite. Needs node_modules (`npm ci`,
# which ../run-tests.sh runs).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
# shellcheck source=../server.sh
source ../server.sh
export JSONKV_SERVER_BIN

[[ -d node_modules ]] || { echo "node/test.sh: no node_modules; run npm ci" >&2; exit 1; }
WORK=$(mktemp -d -t jsonkv-node.XXXXXX)
cleanup() {
  stop_server || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "node/test.sh: npm pack"
npm pack --silent --pack-destination "$WORK" >"$WORK/pack.log"
tarball=$(ls "$WORK"/jsonkv-client-*.tgz)
tar tzf "$tarball" | sort

# The project installs the tarball, and the test tools at the versions package.json pins.
echo "node/test.sh: installing $(basename "$tarball") into an empty project in $WORK/project"
mkdir "$WORK/project"
cp -r test examples "$WORK/project/"
dev() { node -p "require('$HERE/package.json').devDependencies['$1']"; }
(
  cd "$WORK/project"
  npm init -y >/dev/null
  npm install --no-audit --no-fund --silent "$tarball" \
    "typescript@$(dev typescript)" "@types/node@$(dev @types/node)" "node-forge@$(dev node-forge)"
)
cd "$WORK/project"

# The package required is the installed one, and its version is the server's.
want=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$HERE/../../Cargo.toml")
node - "$want" <<'JS'
const resolved = require.resolve('jsonkv-client');
const { version } = require('jsonkv-client/package.json');
if (!resolved.startsWith(`${process.cwd()}/node_modules/`)) throw new Error(`resolved ${resolved}`);
if (version !== process.argv[2]) throw new Error(`version ${version}, server ${process.argv[2]}`);
console.log(`node/test.sh: jsonkv-client ${version} from ${resolved}`);
JS

echo "node/test.sh: tsc --noEmit -p examples"
npx --no-install tsc --noEmit -p examples

start_server
rc=0
node test/smoke.js "$JSONKV_ADDR" || rc=1
# The TypeScript examples run too, compiled by the same tsc.
npx --no-install tsc -p examples --noEmit false --outDir example-ts &&
  node example-ts/example.js "$JSONKV_ADDR" &&
  node example-ts/live-query.js "$JSONKV_ADDR" || rc=1
(($# > 0)) || set -- test/*.test.js
node --test --test-timeout=60000 "$@" || rc=1
stop_server || rc=1
exit "$rc"
