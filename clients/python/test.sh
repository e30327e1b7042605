#!/usr/bin/env bash
# Runs the Python client's checks against the installed package, never the source folder:
# builds the sdist and the wheel (`python -m build`; the wheel from the sdist alone), installs
# the wheel into a fresh venv in a temporary folder, and from there checks the version against
# the server's, type-checks the examples (mypy --strict), then starts jsonkv-server on a free
# port and runs the smoke program and the pytest suite. Needs .venv (see ../run-tests.sh).
set -euo pipefail
cd "$(dirname "$0")"
HERE=$(pwd)
# shellcheck source=../server.sh
source ../server.sh
export JSONKV_SERVER_BIN

[[ -x .venv/bin/python ]] || { echo "python/test.sh: no .venv; run ../run-tests.sh" >&2; exit 1; }
WORK=$(mktemp -d -t jsonkv-python.XXXXXX)
cleanup() {
  stop_server || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "python/test.sh: building the sdist and wheel"
.venv/bin/python -m build --outdir "$WORK/dist" . >"$WORK/build.log" 2>&1 ||
  { cat "$WORK/build.log" >&2; exit 1; }
ls "$WORK/dist"

echo "python/test.sh: installing the wheel into a fresh venv in $WORK"
.venv/bin/python -m venv "$WORK/venv"
PY=$WORK/venv/bin/python
"$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt "$WORK"/dist/*.whl
cp -r tests examples pyproject.toml "$WORK/"
cd "$WORK"

# The package imported is the installed one, and its version is the server's.
want=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$HERE/../../Cargo.toml")
"$PY" - "$want" "$WORK/venv" <<'PYTHON'
import sys
import jsonkv_client
want, venv = sys.argv[1], sys.argv[2]
assert jsonkv_client.__file__.startswith(venv), f"imported {jsonkv_client.__file__}, not the wheel"
assert jsonkv_client.__version__ == want, f"version {jsonkv_client.__version__}, server {want}"
print(f"python/test.sh: jsonkv_client {want} from {jsonkv_client.__file__}")
PYTHON

echo "python/test.sh: mypy --strict examples/"
"$PY" -m mypy --strict examples/

start_server
# start_server replaced the EXIT trap: put the cleanup back.
trap cleanup EXIT
rc=0
"$PY" tests/smoke.py "$JSONKV_ADDR" || rc=1
"$PY" -m pytest -p no:cacheprovider "$@" || rc=1
stop_server || rc=1
exit "$rc"
