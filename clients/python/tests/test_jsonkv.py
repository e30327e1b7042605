"""Black-box tests of the jsonkv contract from Python, through jsonkv_client and the raw stub,
against the real server."""

import random
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path

import grpc
import pytest

import jsonkv_client
from jsonkv_client import Compare, Delete, Entry, Event, Get, Insert, Patch, Snapshot, pb

# Bounds every watch stream of this suite, so a missing event fails instead of hanging.
WATCH_DEADLINE = 30
# Bounds every lock acquisition and every wait for a thread of this suite.
LOCK_TIMEOUT = 30


def test_insert_get_round_trip_nested_unicode(kv, prefix):
    key = prefix + "ünïcødé/🔑"
    value = {
        "greeting": "héllo wörld 🌍",
        "日本語": ["値", {"deep": {"deeper": [1, 2.5, -0.125, None, True, False, ""]}}],
        "escapes": 'quote " backslash \\ newline \n tab \t nul \u0000',
        "empty": {"object": {}, "array": []},
    }
    inserted = kv.insert(key, value)
    assert inserted.revision > 0
    assert inserted.create_revision == inserted.revision
    assert inserted.version == 1

    assert kv.get(key) == Entry(key, value, inserted.revision, inserted.revision, 1)

    replaced = kv.insert(key, ["replaced"])
    assert replaced.revision > inserted.revision
    assert (replaced.create_revision, replaced.version) == (inserted.revision, 2)
    assert kv.get(key) == Entry(key, ["replaced"], inserted.revision, replaced.revision, 2)


@pytest.mark.parametrize(
    "number",
    [2**63 - 1, -(2**63), 2**64 + 1, 123456789012345678901234567890],
    ids=["int64-max", "int64-min", "2^64+1", "30-digit"],
)
def test_big_integers_survive_the_json_text_path(kv, prefix, number):
    key = prefix + "big"
    kv.insert(key, {"n": number, "list": [number, -number]})

    assert kv.get(key).value == {"n": number, "list": [number, -number]}
    response = kv.stub.Get(pb.GetRequest(key=key, value_encoding=pb.VALUE_ENCODING_JSON))
    assert str(number) in response.kv.value_json
    assert not response.kv.HasField("value")


def test_default_encoding_is_struct(kv, prefix):
    key = prefix + "struct"
    kv.insert(key, {"hello": "world", "n": 1})

    kv_pb = kv.stub.Get(pb.GetRequest(key=key)).kv
    assert kv_pb.value_json == ""
    fields = kv_pb.value.struct_value.fields
    assert fields["hello"].string_value == "world"
    assert fields["n"].number_value == 1.0


def test_watch_key_sends_snapshot_then_each_insert_in_order(kv, prefix):
    key = prefix + "watched"
    first = kv.insert(key, {"n": 0}).revision

    with kv.watch_key(key, timeout=WATCH_DEADLINE) as watch:
        snapshot = next(watch)
        assert isinstance(snapshot, Snapshot)
        assert snapshot.revision >= first
        assert snapshot.entries == [Entry(key, {"n": 0}, first, first, 1)]

        revisions = [kv.insert(key, {"n": n}).revision for n in (1, 2, 3)]
        deleted = kv.delete(key).revision
        events = [next(watch) for _ in range(4)]

    assert [e.type for e in events] == ["put", "put", "put", "delete"]
    assert [e.revision for e in events] == revisions + [deleted]
    assert [e.entry.value for e in events] == [{"n": 1}, {"n": 2}, {"n": 3}, None]
    assert [e.entry.version for e in events[:3]] == [2, 3, 4]
    assert events[3].entry.key == key and events[3].entry.mod_revision == deleted
    assert first < revisions[0] < revisions[1] < revisions[2] < deleted


def test_watch_of_absent_key_starts_with_empty_snapshot(kv, prefix):
    key = prefix + "absent"
    with kv.watch_key(key, timeout=WATCH_DEADLINE) as watch:
        snapshot = next(watch)
        assert isinstance(snapshot, Snapshot) and snapshot.entries == []

        created = kv.insert(key, "now here")
        event = next(watch)
    assert (event.type, event.revision, event.entry.value) == ("put", created.revision, "now here")
    assert event.entry.create_revision == created.revision


def test_watch_prefix_sees_only_keys_under_the_prefix(kv, prefix):
    a = kv.insert(prefix + "a", "a").revision
    outside = prefix.rstrip("/") + "-outside"
    kv.insert(outside, "not watched")

    with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as watch:
        snapshot = next(watch)
        assert isinstance(snapshot, Snapshot)
        assert snapshot.entries == [Entry(prefix + "a", "a", a, a, 1)]

        b = kv.insert(prefix + "b", {"b": True}).revision
        kv.insert(outside, "still not watched")
        c = kv.insert(prefix + "sub/c", [3]).revision
        deleted = kv.delete(prefix + "a").revision
        events = [next(watch) for _ in range(3)]

    assert [(e.type, e.entry.key, e.revision) for e in events] == [
        ("put", prefix + "b", b),
        ("put", prefix + "sub/c", c),
        ("delete", prefix + "a", deleted),
    ]
    assert [e.entry.value for e in events] == [{"b": True}, [3], None]


def test_large_snapshot_comes_in_several_messages_with_last_set(kv, prefix):
    big = "x" * 600_000  # the snapshot of three of these cannot fit one message
    names = ["a", "b", "c"]
    for name in names:
        kv.insert(prefix + name, {"name": name, "padding": big})

    request = pb.WatchPrefixRequest(prefix=prefix, value_encoding=pb.VALUE_ENCODING_JSON)
    call = kv.stub.WatchPrefix(request, timeout=WATCH_DEADLINE)
    parts = []
    for message in call:
        if message.WhichOneof("response") == "snapshot":
            parts.append(message.snapshot)
            if message.snapshot.last:
                break
    call.cancel()
    assert len(parts) > 1
    assert len({part.revision for part in parts}) == 1
    assert [part.last for part in parts] == [False] * (len(parts) - 1) + [True]
    assert [entry.key for part in parts for entry in part.kvs] == [prefix + n for n in names]

    with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as watch:
        snapshot = next(watch)
    assert [e.value["name"] for e in snapshot.entries] == names


def test_watch_from_start_revision_replays_exactly_the_later_events(kv, prefix):
    key = prefix + "resumed"
    revisions = [kv.insert(key, n).revision for n in range(4)]

    with kv.watch_key(key, start_revision=revisions[1], timeout=WATCH_DEADLINE) as watch:
        replayed = [next(watch) for _ in range(3)]
        assert all(isinstance(e, Event) for e in replayed)
        assert [(e.revision, e.entry.value) for e in replayed] == [
            (revisions[1], 1),
            (revisions[2], 2),
            (revisions[3], 3),
        ]

        # The next event is the next change: nothing before it was left out or repeated.
        live = kv.insert(key, 4).revision
        event = next(watch)
        assert (event.revision, event.entry.value) == (live, 4)
        assert watch.resume_revision == live + 1


def test_a_watch_from_a_revision_resumes_there_until_it_sees_something(kv, prefix):
    key = prefix + "later"
    start = kv.insert(prefix + "other", 0).revision + 1
    with kv.watch_key(key, start_revision=start, timeout=WATCH_DEADLINE) as watch:
        assert watch.resume_revision == start
        written = kv.insert(key, 1).revision
        assert next(watch).revision == written
        assert watch.resume_revision == written + 1


def test_watches_name_their_store_and_share_it(kv, prefix):
    with (
        kv.watch_key(prefix + "k", timeout=WATCH_DEADLINE) as by_key,
        kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as by_prefix,
    ):
        assert isinstance(next(by_key), Snapshot) and isinstance(next(by_prefix), Snapshot)
        assert by_key.store_id
        assert by_prefix.store_id == by_key.store_id


def test_resume_with_store_id_continues_after_resume_revision(kv, prefix):
    key = prefix + "k"
    with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as watch:
        assert isinstance(next(watch), Snapshot)
        seen = kv.insert(key, "seen").revision
        assert next(watch).revision == seen
        resume_revision, store_id = watch.resume_revision, watch.store_id
    assert resume_revision == seen + 1

    missed = [kv.insert(key, n).revision for n in (1, 2)]
    with kv.watch_prefix(
        prefix, start_revision=resume_revision, store_id=store_id, timeout=WATCH_DEADLINE
    ) as resumed:
        replayed = [next(resumed) for _ in range(2)]
        assert [(e.revision, e.entry.value) for e in replayed] == [(missed[0], 1), (missed[1], 2)]
        live = kv.insert(key, 3).revision
        assert next(resumed).revision == live
        assert resumed.store_id == store_id


@pytest.mark.parametrize("watch", ["watch_key", "watch_prefix"])
def test_resume_with_another_store_id_fails_with_store_mismatch(kv, prefix, watch):
    key = prefix + "k"
    revision = kv.insert(key, "v").revision
    with kv.watch_key(key, timeout=WATCH_DEADLINE) as fresh:
        store_id = fresh.store_id

    target = key if watch == "watch_key" else prefix
    with (
        getattr(kv, watch)(
            target, start_revision=revision, store_id="not-this-store", timeout=WATCH_DEADLINE
        ) as resumed,
        pytest.raises(jsonkv_client.JsonKvError) as failed,
    ):
        next(resumed)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "not-this-store" in failed.value.details
    info = failed.value.info
    assert (info.reason, info.domain) == ("STORE_MISMATCH", "jsonkv.dev")
    assert dict(info.metadata) == {"store_id": store_id}


def test_resume_beyond_the_store_revision_fails_with_store_behind(kv, prefix):
    key = prefix + "k"
    current = kv.insert(key, "v").revision
    with kv.watch_key(key, timeout=WATCH_DEADLINE) as fresh:
        store_id = fresh.store_id

    # The store never reached the revision this resume claims to have seen: it lost changes.
    with (
        kv.watch_key(
            key, start_revision=current + 1000, store_id=store_id, timeout=WATCH_DEADLINE
        ) as resumed,
        pytest.raises(jsonkv_client.JsonKvError) as failed,
    ):
        next(resumed)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    info = failed.value.info
    assert (info.reason, info.domain) == ("STORE_BEHIND", "jsonkv.dev")
    assert info.metadata["store_id"] == store_id
    assert current <= int(info.metadata["current_revision"]) < current + 999

    # Without a store_id nothing is checked: a watch may start at a future revision on purpose.
    with kv.watch_key(key, start_revision=current + 1000, timeout=WATCH_DEADLINE) as future:
        assert future.store_id == store_id


def test_compare_and_swap(kv, prefix):
    key = prefix + "cas"
    created = kv.insert(key, "v1", expected_mod_revision=0).revision
    swapped = kv.insert(key, "v2", expected_mod_revision=created).revision
    assert swapped > created

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.insert(key, "v3", expected_mod_revision=created)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    info = failed.value.info
    assert (info.reason, info.domain) == ("REVISION_MISMATCH", "jsonkv.dev")
    assert dict(info.metadata) == {
        "key": key,
        "expected_mod_revision": str(created),
        "current_mod_revision": str(swapped),
    }
    assert kv.get(key).value == "v2"

    # A writer that lost the race retries with the revision the error carries.
    retried = kv.insert(key, "v3", expected_mod_revision=int(info.metadata["current_mod_revision"]))
    assert kv.get(key) == Entry(key, "v3", created, retried.revision, 3)

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.insert(key, "again", expected_mod_revision=0)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.info.metadata["current_mod_revision"] == str(retried.revision)

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.delete(key, expected_mod_revision=created)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert kv.delete(key, expected_mod_revision=retried.revision).deleted


def test_compare_and_swap_on_absent_key_reports_zero(kv, prefix):
    key = prefix + "absent"
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.insert(key, "v", expected_mod_revision=5)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.info.metadata["current_mod_revision"] == "0"
    with pytest.raises(jsonkv_client.JsonKvError) as missing:
        kv.get(key)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def bad_request_fields(error: jsonkv_client.JsonKvError) -> list[str]:
    return [violation.field for violation in error.field_violations]


@pytest.mark.parametrize("call", ["get", "insert", "delete"])
def test_empty_key_is_invalid_argument(kv, call):
    args = {"get": ("",), "insert": ("", "v"), "delete": ("",)}[call]
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        getattr(kv, call)(*args)
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "key" in bad_request_fields(failed.value)


def test_malformed_json_text_is_invalid_argument(kv, prefix):
    key = prefix + "malformed"
    with pytest.raises(jsonkv_client.InvalidArgumentError) as failed:
        kv.insert_json(key, "{not json")
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(jsonkv_client.JsonKvError) as missing:
        kv.get(key)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def nested(depth):
    """A JSON array nested `depth` levels deep, around the number 1."""
    return "[" * depth + "1" + "]" * depth


def test_a_document_deeper_than_the_nesting_limit_is_refused_naming_it(kv, prefix):
    key = prefix + "too-deep"
    with pytest.raises(jsonkv_client.InvalidArgumentError) as failed:
        kv.insert_json(key, nested(25))
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "24" in failed.value.details
    with pytest.raises(jsonkv_client.JsonKvError) as missing:
        kv.get(key)
    assert missing.value.code == grpc.StatusCode.NOT_FOUND


def test_a_default_encoding_client_reads_everything_that_is_stored(kv, prefix):
    """Python's protobuf runtime with its default settings (a recursion limit of 100) reads
    the deepest document the server accepts in google.protobuf.Value form, and a number that
    form cannot carry comes as JSON text instead of as a different value."""
    deepest, huge = prefix + "deepest", prefix + "huge"
    kv.stub.Insert(pb.InsertRequest(key=deepest, value_json=nested(24)))
    kv.stub.Insert(pb.InsertRequest(key=huge, value_json='{"n":1e999}'))

    got = kv.stub.Get(pb.GetRequest(key=deepest)).kv
    assert got.HasField("value") and got.value_json == ""
    level = got.value
    for _ in range(24):
        (level,) = level.list_value.values
    assert level.number_value == 1

    got = kv.stub.Get(pb.GetRequest(key=huge)).kv
    assert not got.HasField("value")
    assert got.value_json == '{"n":1e+999}'  # the compact form it is stored in

    listed = kv.stub.List(pb.ListRequest(prefix=prefix)).kvs
    assert [k.key for k in listed] == [deepest, huge]


def test_missing_key_is_not_found(kv, prefix):
    key = prefix + "missing"
    for call in (kv.get, kv.delete):
        with pytest.raises(jsonkv_client.JsonKvError) as failed:
            call(key)
        assert failed.value.code == grpc.StatusCode.NOT_FOUND
    assert not kv.delete(key, allow_missing=True).deleted


def test_list_pages_through_the_prefix_in_key_order(kv, prefix):
    names = ["e", "a", "d", "b/1", "c"]
    for name in names:
        kv.insert(prefix + name, {"name": name})
    kv.insert(prefix.rstrip("/") + "-outside", "not listed")

    listed = list(kv.list(prefix, page_size=2))
    assert [e.key for e in listed] == [prefix + n for n in sorted(names)]
    assert [e.value for e in listed] == [{"name": n} for n in sorted(names)]

    first_page = kv.stub.List(pb.ListRequest(prefix=prefix, page_size=2))
    assert len(first_page.kvs) == 2 and first_page.next_page_token


def test_example_program_runs_to_completion(target):
    example = Path(__file__).resolve().parent.parent / "examples" / "example.py"
    done = subprocess.run(
        [sys.executable, str(example), target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "18446744073709551617" in lines[1]
    assert lines[2].startswith("watch: snapshot")
    assert [line.split(" at ")[0] for line in lines[3:6]] == ["watch: put"] * 3
    assert lines[6].startswith("lease: ") and lines[6].endswith("holds ['example/session']")
    assert lines[7] == "lease: revoked, example/session is gone: True"
    assert lines[8].startswith("lock: holding example/lock/")
    assert lines[9:] == ["lock: released", "done"]


def code_of(call, *args, **kwargs) -> grpc.StatusCode:
    """The status code `call` fails with; fails the test if it succeeds."""
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        call(*args, **kwargs)
    return failed.value.code


def test_lease_grant_keep_alive_time_to_live_list_and_revoke(kv, prefix):
    granted = kv.lease_grant(30)
    assert granted.id > 0 and granted.ttl_seconds == 30
    assert granted.id in kv.lease_list()
    assert kv.lease_keep_alive(granted.id) == 30

    kv.insert(prefix + "b", 1, lease=granted.id)
    last_put = kv.insert(prefix + "a", 2, lease=granted.id).revision
    status = kv.lease_time_to_live(granted.id, keys=True)
    assert (status.id, status.granted_ttl_seconds) == (granted.id, 30)
    assert 0 < status.ttl_seconds <= 30
    assert list(status.keys) == [prefix + "a", prefix + "b"]
    assert list(kv.lease_time_to_live(granted.id).keys) == []
    assert kv.get(prefix + "a").lease == granted.id

    assert kv.lease_revoke(granted.id) > last_put
    assert granted.id not in kv.lease_list()
    assert list(kv.list(prefix)) == []
    for call in (kv.lease_keep_alive, kv.lease_revoke, kv.lease_time_to_live):
        assert code_of(call, granted.id) == grpc.StatusCode.NOT_FOUND


def test_lease_ids_of_any_size_are_exact(kv, prefix):
    # Beyond 2^53, where a double would round it.
    wanted = 2**62 + random.randrange(2**40)
    granted = kv.lease_grant(30, id=wanted)
    assert granted.id == wanted
    assert wanted in kv.lease_list()
    kv.insert(prefix + "k", "v", lease=wanted)
    assert kv.get(prefix + "k").lease == wanted
    assert kv.lease_time_to_live(wanted).id == wanted
    assert code_of(kv.lease_grant, 30, id=wanted) == grpc.StatusCode.ALREADY_EXISTS
    kv.lease_revoke(wanted)


def test_revoke_deletes_every_attached_key_at_one_revision(kv, prefix):
    lease = kv.lease_grant(30).id
    leased = [prefix + name for name in ("a", "b", "c")]
    for key in leased:
        kv.insert(key, key, lease=lease)
    kv.insert(prefix + "free", "no lease")
    # Attached, then detached: a write without a lease takes the key off it.
    kv.insert(prefix + "moved", 1, lease=lease)
    kv.insert(prefix + "moved", 2)

    with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as watch:
        snapshot = next(watch)
        assert {e.key: e.lease for e in snapshot.entries} == {
            **{key: lease for key in leased},
            prefix + "free": 0,
            prefix + "moved": 0,
        }
        revision = kv.lease_revoke(lease)
        events = [next(watch) for _ in leased]

    assert [(e.type, e.entry.key, e.revision) for e in events] == [
        ("delete", key, revision) for key in leased
    ]
    assert [(e.lease, e.cause) for e in events] == [(lease, "revoked")] * len(leased)
    assert [e.key for e in kv.list(prefix)] == [prefix + "free", prefix + "moved"]


def test_an_expired_lease_deletes_its_keys_with_cause_expired(kv, prefix):
    key = prefix + "ephemeral"
    with kv.watch_key(key, timeout=WATCH_DEADLINE) as watch:
        assert next(watch).entries == []
        lease = kv.lease_grant(1).id  # and nothing keeps it alive
        put = kv.insert(key, "short-lived", lease=lease).revision
        created = next(watch)
        assert (created.type, created.revision, created.entry.lease) == ("put", put, lease)
        assert (created.lease, created.cause) == (0, None)
        expired = next(watch)
    assert (expired.type, expired.entry.key) == ("delete", key)
    assert (expired.lease, expired.cause) == (lease, "expired")
    assert expired.revision > put
    assert code_of(kv.get, key) == grpc.StatusCode.NOT_FOUND
    assert lease not in kv.lease_list()


def test_a_delete_by_a_client_names_no_lease(kv, prefix):
    key = prefix + "k"
    lease = kv.lease_grant(30).id
    kv.insert(key, "v", lease=lease)
    with kv.watch_key(key, timeout=WATCH_DEADLINE) as watch:
        next(watch)
        kv.delete(key)
        deleted = next(watch)
    assert (deleted.type, deleted.lease, deleted.cause) == ("delete", 0, None)
    kv.lease_revoke(lease)


def test_unknown_leases_are_not_found_and_bad_ttls_invalid(kv, prefix):
    gone = kv.lease_grant(30).id
    kv.lease_revoke(gone)
    key = prefix + "k"
    assert code_of(kv.insert, key, "v", lease=gone) == grpc.StatusCode.NOT_FOUND
    assert code_of(kv.get, key) == grpc.StatusCode.NOT_FOUND  # nothing was written
    assert code_of(kv.lease_keep_alive, gone) == grpc.StatusCode.NOT_FOUND

    for ttl in (0, -1, 31_536_001):
        with pytest.raises(jsonkv_client.JsonKvError) as failed:
            kv.lease_grant(ttl)
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "ttl_seconds" in bad_request_fields(failed.value)
    assert kv.lease_grant(31_536_000).ttl_seconds == 31_536_000


def test_a_lease_handle_keeps_its_lease_alive_past_two_ttls(kv, prefix):
    key = prefix + "kept"
    # A TTL of 2 s leaves a keep-alive every 2/3 s more than a second of slack on a busy machine.
    with kv.lease(2) as lease:
        kv.insert(key, "alive", lease=lease.id)
        # 2.5 TTLs with no event for the key: the watch ends at its deadline instead.
        with kv.watch_key(key, timeout=5.0) as watch:
            assert [e.key for e in next(watch).entries] == [key]
            with pytest.raises(jsonkv_client.JsonKvError) as ended:
                event = next(watch)
                pytest.fail(f"the key changed while its lease was kept alive: {event}")
        assert ended.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not lease.lost
        assert kv.get(key).lease == lease.id
        assert kv.lease_time_to_live(lease.id).granted_ttl_seconds == 2
    # Closing it revoked it.
    assert lease.id not in kv.lease_list()
    assert code_of(kv.get, key) == grpc.StatusCode.NOT_FOUND


def test_a_lease_handle_reports_its_lease_lost(kv, prefix):
    with kv.lease(3) as lease:
        assert not lease.lost
        kv.lease_revoke(lease.id)  # as if it had expired, or another client revoked it
        assert lease.wait_lost(timeout=LOCK_TIMEOUT)
    # Closing a lost lease has nothing to revoke, and does not fail.
    lease.close()


def test_lock_holders_never_overlap(target, kv, prefix):
    name, counter = prefix + "lock", prefix + "counter"
    kv.insert(counter, 0)
    workers, rounds = 4, 5
    guard = threading.Lock()
    holding = []  # how many held the lock, each time one took it
    revisions = []  # each holder's create_revision, in the order they held it
    active = 0

    def work() -> None:
        nonlocal active
        # A connection each, as separate processes would have.
        with jsonkv_client.connect(target) as client:
            for _ in range(rounds):
                with client.lock(name, ttl=10, timeout=LOCK_TIMEOUT) as lock:
                    with guard:
                        active += 1
                        holding.append(active)
                        revisions.append(lock.create_revision)
                    # Read-modify-write with no compare-and-swap: only the lock keeps it exact.
                    value = client.get(counter).value
                    client.insert(counter, value + 1)
                    with guard:
                        active -= 1

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(work) for _ in range(workers)]
        for future in futures:
            future.result(timeout=LOCK_TIMEOUT * rounds)

    assert kv.get(counter).value == workers * rounds
    assert holding == [1] * (workers * rounds)
    # Waiters get the lock in the order they asked for it.
    assert revisions == sorted(revisions) and len(set(revisions)) == len(revisions)
    assert list(kv.list(name + "/")) == []


def test_a_lock_passes_to_the_waiter_when_its_holders_lease_is_revoked(
    target, kv, prefix, monkeypatch, request
):
    name = prefix + "lock"
    # A short TTL, so that a keep-alive soon finds the lease revoked.
    holder = kv.lock(name, ttl=3, timeout=LOCK_TIMEOUT)
    # The waiter's own connection, counting its listings.
    client = jsonkv_client.connect(target)
    request.addfinalizer(client.close)
    lists = []
    listing = client.list
    monkeypatch.setattr(client, "list", lambda *a, **k: lists.append(a) or listing(*a, **k))

    def wait_for_the_lock():
        lock = client.lock(name, ttl=30, timeout=LOCK_TIMEOUT)
        try:
            kv.get(holder.key)
            return lock, "the holder's key was still there"
        except jsonkv_client.JsonKvError as error:
            return lock, error.code

    with ThreadPoolExecutor(1) as pool:
        with kv.watch_prefix(name + "/", timeout=WATCH_DEADLINE) as watch:
            assert [e.key for e in next(watch).entries] == [holder.key]
            waiting = pool.submit(wait_for_the_lock)
            # The waiter's key: it is in line behind the holder.
            queued = next(watch)
            assert queued.type == "put" and queued.entry.key != holder.key
            # However long it is given, a waiter never gets the lock while the holder holds it.
            assert not wait([waiting], timeout=0.5).done
            kv.lease_revoke(holder.lease.id)
        waiter, seen = waiting.result(timeout=LOCK_TIMEOUT)

    with waiter:
        assert seen == grpc.StatusCode.NOT_FOUND
        # It looked before it waited, and again once the holder's key went: no polling.
        assert len(lists) == 2
        assert waiter.key == queued.entry.key
        assert waiter.create_revision > holder.create_revision
        assert holder.lease.wait_lost(timeout=LOCK_TIMEOUT) and holder.lost
        holder.release()  # nothing left to revoke
    assert list(kv.list(name + "/")) == []


def test_a_lock_passes_to_the_waiter_when_a_dead_holders_lease_expires(kv, prefix):
    name = prefix + "lock"
    # A holder that took the lock the documented way, then died: nothing keeps its lease alive.
    dead = kv.lease_grant(2).id
    dead_key = f"{name}/{dead:x}"
    kv.insert(dead_key, None, expected_mod_revision=0, lease=dead)

    with kv.watch_key(dead_key, timeout=WATCH_DEADLINE) as watch:
        assert [e.key for e in next(watch).entries] == [dead_key]
        with kv.lock(name, ttl=30, timeout=LOCK_TIMEOUT) as lock:
            assert code_of(kv.get, dead_key) == grpc.StatusCode.NOT_FOUND
            expired = next(watch)
            assert (expired.type, expired.lease, expired.cause) == ("delete", dead, "expired")
            assert [e.key for e in kv.list(name + "/")] == [lock.key]


def test_a_lock_not_acquired_in_time_raises_and_leaves_no_key(kv, prefix):
    name = prefix + "lock"
    with kv.lock(name, ttl=30, timeout=LOCK_TIMEOUT) as held:
        with pytest.raises(TimeoutError):
            kv.lock(name, ttl=30, timeout=0.5)
        assert [e.key for e in kv.list(name + "/")] == [held.key]
    assert list(kv.list(name + "/")) == []


def test_a_lock_named_under_another_is_another_lock(kv, prefix):
    name = prefix + "lock"
    with kv.lock(name + "/inner", ttl=30, timeout=LOCK_TIMEOUT) as inner:
        # The inner lock's key lies under "<name>/", but is no holder of this lock.
        with kv.lock(name, ttl=30, timeout=LOCK_TIMEOUT) as outer:
            assert not inner.lost and not outer.lost
    assert list(kv.list(name + "/")) == []


BIG = 123456789012345678901234567890  # beyond int64 and a double's 2^53
# Beyond a double's 2^53 but within u64: what JSON Patch values carry exactly today (see
# test_json_patch_values_beyond_64_bits_are_exact).
U64_MAX = 2**64 - 1


def test_a_txn_whose_compares_hold_runs_success_at_one_revision(kv, prefix):
    a, b, gone = prefix + "a", prefix + "b", prefix + "gone"
    a_rev = kv.insert(a, {"n": BIG, "tags": ["x"]}).revision
    kv.insert(b, 1)
    kv.insert(b, 2)
    kv.insert(gone, "doomed")

    result = kv.txn(
        compare=[
            Compare(a, mod_revision=a_rev),
            Compare(a, create_revision=a_rev),
            Compare(a, value={"tags": ["x"], "n": BIG}),  # member order does not matter
            Compare(b, "<", version=3),
            Compare(b, ">", version=1),
            Compare(b, "!=", value=1),
            Compare(prefix + "absent", exists=False),
            Compare(gone, exists=True),
        ],
        success=[
            Insert(a, {"n": BIG + 1}, expected_mod_revision=a_rev),
            Patch(b, json_patch=[{"op": "replace", "path": "", "value": [U64_MAX]}]),
            Delete(gone),
            Get(a),
            Get(gone),
        ],
        failure=[Insert(prefix + "failure-ran", True)],
    )

    assert result.succeeded
    inserted, patched, deleted, got_a, got_gone = result.results
    assert inserted.revision == patched.mod_revision == deleted.revision == result.revision
    assert result.revision > a_rev
    assert (inserted.create_revision, inserted.version) == (a_rev, 2)
    assert patched == Entry(b, [U64_MAX], patched.create_revision, result.revision, 3)
    assert deleted.deleted
    # A Get sees the writes of the operations before it; an absent key is None, not NOT_FOUND.
    assert got_a == Entry(a, {"n": BIG + 1}, a_rev, result.revision, 2)
    assert got_gone is None
    assert {e.key: e.value for e in kv.list(prefix)} == {a: {"n": BIG + 1}, b: [U64_MAX]}


def test_a_txn_whose_compare_fails_runs_failure_and_writes_nothing_else(kv, prefix):
    a, b = prefix + "a", prefix + "b"
    a_rev = kv.insert(a, "v1").revision
    b_rev = kv.insert(b, {"keep": True}).revision

    result = kv.txn(
        compare=[Compare(a, mod_revision=a_rev), Compare(b, value={"keep": False})],
        success=[Insert(a, "v2"), Delete(b), Insert(prefix + "success-ran", True)],
        failure=[Get(a), Get(prefix + "absent"), Insert(prefix + "failure-ran", BIG)],
    )

    assert not result.succeeded
    got_a, got_absent, marker = result.results
    assert got_a == Entry(a, "v1", a_rev, a_rev, 1)
    assert got_absent is None
    assert marker.revision == result.revision > b_rev
    assert {e.key: (e.value, e.mod_revision) for e in kv.list(prefix)} == {
        a: ("v1", a_rev),
        b: ({"keep": True}, b_rev),
        prefix + "failure-ran": (BIG, result.revision),
    }


def test_a_txn_with_no_writes_answers_the_revision_it_read_at(kv, prefix):
    written = kv.insert(prefix + "a", 1).revision
    result = kv.txn(compare=[Compare(prefix + "a", "!=", value=1)], failure=[Get(prefix + "a")])
    assert not result.succeeded
    assert result.revision >= written
    assert result.results == [Entry(prefix + "a", 1, written, written, 1)]


def test_a_txns_writes_reach_a_prefix_watch_as_one_revision(kv, prefix):
    a, b = prefix + "a", prefix + "b"
    with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as watch:
        assert next(watch).entries == []
        result = kv.txn(success=[Insert(b, "b"), Insert(a, "a")])
        assert result.succeeded
        assert kv.get(a).mod_revision == kv.get(b).mod_revision == result.revision
        first = next(watch)
        # More of this revision follows: a resume would start at it, not after it.
        assert watch.resume_revision == result.revision
        assert watch.resume_seen_keys == {first.entry.key}
        second = next(watch)
        assert watch.resume_revision == result.revision + 1
        after = kv.insert(a, "later").revision
        third = next(watch)

    assert [(e.type, e.revision) for e in (first, second)] == [("put", result.revision)] * 2
    assert {e.entry.key: e.entry.value for e in (first, second)} == {a: "a", b: "b"}
    assert (third.revision, third.entry.value) == (after, "later")


def test_a_txn_writing_a_key_twice_is_invalid_and_writes_nothing(kv, prefix):
    key = prefix + "twice"
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.txn(success=[Insert(prefix + "other", 1), Insert(key, 1), Patch(key, {"n": 2})])
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "success" in bad_request_fields(failed.value)
    assert list(kv.list(prefix)) == []


def test_a_failing_op_fails_the_whole_txn(kv, prefix):
    key = prefix + "k"
    rev = kv.insert(key, 1).revision
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.txn(success=[Insert(prefix + "new", 1), Insert(key, 2, expected_mod_revision=rev + 99)])
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.info.reason == "REVISION_MISMATCH"
    assert [(e.key, e.value) for e in kv.list(prefix)] == [(key, 1)]


def test_txn_builders_refuse_what_the_contract_would(kv, prefix):
    for bad in (
        lambda: Compare("k"),
        lambda: Compare("k", version=1, exists=True),
        lambda: Compare("k", "<=", version=1),
        lambda: Patch("k"),
        lambda: Patch("k", {}, json_patch=[]),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        kv.txn(success=[pb.Op(get=pb.GetRequest(key=prefix + "k"))])
    # Null is a value: a merge patch of null, a compare with null.
    assert Patch("k", None).to_pb().merge_json == "null"
    assert Compare("k", value=None).to_pb().value_json == "null"


def test_merge_patch_creates_merges_and_keeps_big_integers_exact(kv, prefix):
    key = prefix + "doc"
    created = kv.merge(key, {"user": {"name": "ada", "visits": 1}, "big": BIG})
    assert created == Entry(
        key,
        {"user": {"name": "ada", "visits": 1}, "big": BIG},
        created.mod_revision,
        created.mod_revision,
        1,
    )

    merged = kv.patch(key, {"user": {"visits": BIG * 10, "name": None}, "extra": [1.5, -BIG]})
    want = {"user": {"visits": BIG * 10}, "big": BIG, "extra": [1.5, -BIG]}
    assert merged == Entry(key, want, created.mod_revision, merged.mod_revision, 2)
    assert merged.mod_revision > created.mod_revision
    assert kv.get(key) == merged
    raw = kv.stub.Get(pb.GetRequest(key=key, value_encoding=pb.VALUE_ENCODING_JSON)).kv.value_json
    assert str(BIG) in raw and str(BIG * 10) in raw


def test_patch_compare_and_swap_and_lease(kv, prefix):
    key = prefix + "k"
    lease = kv.lease_grant(30).id
    rev = kv.insert(key, {"a": 1}, lease=lease).revision
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.merge(key, {"b": 2}, expected_mod_revision=rev + 99)
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.info.reason == "REVISION_MISMATCH"
    assert kv.get(key).mod_revision == rev

    # No lease given keeps the key's lease: a patch changes the document, not who owns it.
    patched = kv.merge(key, {"b": 2}, expected_mod_revision=rev)
    assert (patched.value, patched.lease) == ({"a": 1, "b": 2}, lease)
    kv.lease_revoke(lease)
    assert code_of(kv.get, key) == grpc.StatusCode.NOT_FOUND


def test_json_patch_applies_and_a_failing_test_changes_nothing(kv, prefix):
    key = prefix + "doc"
    rev = kv.insert(key, {"n": 1, "list": [1, 2]}).revision
    applied = kv.patch(
        key,
        json_patch=[
            {"op": "test", "path": "/n", "value": 1},
            {"op": "add", "path": "/list/-", "value": U64_MAX},
            {"op": "remove", "path": "/n"},
        ],
    )
    assert applied == Entry(key, {"list": [1, 2, U64_MAX]}, rev, applied.mod_revision, 2)

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.patch(
            key,
            json_patch=[
                {"op": "add", "path": "/added", "value": True},
                {"op": "test", "path": "/list/0", "value": 99},
            ],
        )
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    info = failed.value.info
    assert (info.reason, info.domain) == ("PATCH_TEST_FAILED", "jsonkv.dev")
    assert (info.metadata["operation"], info.metadata["path"]) == ("1", "/list/0")
    assert kv.get(key) == applied  # the add before the failing test did not happen

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.patch(key, json_patch=[{"op": "remove", "path": "/missing"}])
    assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert failed.value.info.reason == "PATCH_PATH_NOT_FOUND"

    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.patch(key, json_patch=[{"op": "frobnicate", "path": "/n"}])
    assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert kv.get(key) == applied


def test_json_patch_of_an_absent_key_is_not_found(kv, prefix):
    key = prefix + "absent"
    with pytest.raises(jsonkv_client.JsonKvError) as failed:
        kv.patch(key, json_patch=[{"op": "add", "path": "/a", "value": 1}])
    assert failed.value.code == grpc.StatusCode.NOT_FOUND
    assert code_of(kv.get, key) == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("watch", ["watch_key", "watch_prefix"])
def test_prev_kv_carries_the_value_before_each_put_and_delete(kv, prefix, watch):
    key = prefix + "k"
    target = key if watch == "watch_key" else prefix
    with (
        getattr(kv, watch)(target, prev_kv=True, timeout=WATCH_DEADLINE) as with_prev,
        getattr(kv, watch)(target, timeout=WATCH_DEADLINE) as without,
    ):
        assert isinstance(next(with_prev), Snapshot) and isinstance(next(without), Snapshot)
        created = kv.insert(key, {"n": BIG}).revision
        replaced = kv.merge(key, {"n": 2})
        deleted = kv.delete(key).revision
        events = [next(with_prev) for _ in range(3)]
        plain = [next(without) for _ in range(3)]

    assert [(e.type, e.revision) for e in events] == [
        ("put", created),
        ("put", replaced.mod_revision),
        ("delete", deleted),
    ]
    first = Entry(key, {"n": BIG}, created, created, 1)
    assert [e.prev_entry for e in events] == [None, first, replaced]
    assert [e.prev_entry for e in plain] == [None, None, None]


@pytest.mark.parametrize(
    "number", [2**64 + 1, BIG, -(2**63) - 1, 10**40], ids=["2^64+1", "30-digit", "-2^63-1", "10^40"]
)
def test_json_patch_values_beyond_64_bits_are_exact(kv, prefix, number):
    key = prefix + "doc"
    kv.insert(key, {})
    patched = kv.patch(key, json_patch=[{"op": "add", "path": "/n", "value": number}])
    assert patched.value == {"n": number}
    assert type(patched.value["n"]) is int


# Live queries: List and WatchPrefix with a filter (CEL), fields (JSON Pointers) and diff.
OPEN = 'value.status == "open"'


def test_a_filtered_list_with_fields_pages_through_the_projected_matches(kv, prefix):
    documents = {
        "a": {"status": "open", "total": 150, "customer": {"name": "ada", "tier": 1}},
        "b": {"status": "closed", "total": 500, "customer": {"name": "bob"}},
        "c": {"status": "open", "total": 50, "customer": {"name": "cy"}},
        "d": {"status": "open", "total": BIG, "customer": {"name": "dee"}, "items": [1, 2]},
        "e": {"status": "open", "total": 101},  # no customer: that pointer names nothing
        "f": "not an object",  # the filter errors on it: no match
        "g": {"status": "open", "total": 1000, "customer": {"name": "gus", "tier": 2}},
    }
    revisions = {name: kv.insert(prefix + name, doc).revision for name, doc in documents.items()}
    query = 'value.status == "open" && value.total > 100'
    fields = ["/total", "/customer/name"]

    listed = list(kv.list(prefix, page_size=2, filter=query, fields=fields))
    assert listed == [
        Entry(prefix + "a", {"total": 150, "customer": {"name": "ada"}}, *[revisions["a"]] * 2, 1),
        Entry(prefix + "d", {"total": BIG, "customer": {"name": "dee"}}, *[revisions["d"]] * 2, 1),
        Entry(prefix + "e", {"total": 101}, *[revisions["e"]] * 2, 1),
        Entry(prefix + "g", {"total": 1000, "customer": {"name": "gus"}}, *[revisions["g"]] * 2, 1),
    ]
    assert str(BIG) in listed[1].json  # every digit, through the projection too
    # Four matches at two a page: the listing took more than one page.
    first = kv.stub.List(pb.ListRequest(prefix=prefix, page_size=2, filter=query, fields=fields))
    assert len(first.kvs) <= 2 and first.next_page_token

    # The filter sees the key too; fields alone project every document.
    by_key = kv.list(prefix, filter='key.endsWith("/b") || key.endsWith("/e")', fields=["/total"])
    assert [(e.key, e.value) for e in by_key] == [
        (prefix + "b", {"total": 500}),
        (prefix + "e", {"total": 101}),
    ]
    assert [e.value for e in kv.list(prefix, filter='value.customer.tier == 2')] == [documents["g"]]


def test_a_filtered_list_goes_on_past_a_page_with_no_match(kv, prefix):
    # The server reads a bounded number of keys for a page (10 000 today): two matches this far
    # apart leave a page between them that holds none, yet has a next page.
    filler = 10_100
    for start in range(0, filler, 128):
        numbers = range(start, min(start + 128, filler))
        kv.txn(success=[Insert(f"{prefix}m/{n:05}", {"match": False}) for n in numbers])
    kv.insert(prefix + "a", {"match": True, "n": 1})
    kv.insert(prefix + "z", {"match": True, "n": 2})

    pages, token = [], ""
    while True:
        request = pb.ListRequest(prefix=prefix, page_size=1, page_token=token, filter="value.match")
        page = kv.stub.List(request)
        pages.append([kv_pb.key for kv_pb in page.kvs])
        token = page.next_page_token
        if not token:
            break
    assert [] in pages[:-1], f"no empty page to go past: {pages}"

    listed = kv.list(prefix, page_size=1, filter="value.match", fields=["/n"])
    assert [(e.key, e.value) for e in listed] == [
        (prefix + "a", {"n": 1}),
        (prefix + "z", {"n": 2}),
    ]


def test_a_filtered_watch_sees_documents_enter_change_and_leave_its_view(kv, prefix):
    a, b, c, d = (prefix + name for name in "abcd")
    kv.insert(a, {"status": "open", "n": 1})
    kv.insert(b, {"status": "closed", "n": 2})
    with (
        kv.watch_prefix(prefix, filter=OPEN, fields=["/n"], timeout=WATCH_DEADLINE) as watch,
        kv.watch_prefix(prefix, timeout=WATCH_DEADLINE) as plain,
    ):
        snapshot = next(watch)
        assert isinstance(snapshot, Snapshot)
        assert [(e.key, e.value) for e in snapshot.entries] == [(a, {"n": 1})]
        assert [e.key for e in next(plain).entries] == [a, b]

        kv.insert(b, {"status": "closed", "n": 3})  # matches neither before nor after
        entered_new = kv.insert(c, {"status": "open", "n": 4}).revision
        entered = kv.merge(b, {"status": "open", "n": 5}).mod_revision
        updated = kv.merge(a, {"n": 6}).mod_revision
        left_by_change = kv.merge(a, {"status": "closed"}).mod_revision
        left_by_delete = kv.delete(b).revision
        kv.insert(d, {"status": "closed"})  # never in the view
        kv.delete(d)
        back = kv.insert(a, {"status": "open", "n": 7}).revision
        # The changes outside the view come between these: had any been sent, it would be here.
        events = [next(watch) for _ in range(6)]
        everything = [next(plain) for _ in range(9)]

    assert [(e.type, e.entry.key, e.revision, e.view_change) for e in events] == [
        ("put", c, entered_new, "entered"),
        ("put", b, entered, "entered"),
        ("put", a, updated, "updated"),
        ("delete", a, left_by_change, "left"),
        ("delete", b, left_by_delete, "left"),
        ("put", a, back, "entered"),
    ]
    assert [e.entry.value for e in events] == [{"n": 4}, {"n": 5}, {"n": 6}, None, None, {"n": 7}]
    # A document that left is named by its key and the change's revision alone.
    assert (events[3].entry.mod_revision, events[3].entry.version) == (left_by_change, 0)
    assert [e.merge_patch for e in events] == [None] * 6  # not asked for
    assert [e.view_change for e in everything] == [None] * 9
    assert [e.entry.key for e in everything][:3] == [b, c, b]


def test_diff_carries_the_merge_patch_from_the_previous_version(kv, prefix):
    key, new = prefix + "k", prefix + "new"
    fields = ["/status", "/n", "/tags", "/sub"]
    kv.insert(key, {"status": "closed", "n": 1, "tags": ["x"]})
    with (
        kv.watch_prefix(
            prefix, filter=OPEN, fields=fields, diff=True, timeout=WATCH_DEADLINE
        ) as watch,
        kv.watch_prefix(prefix, filter=OPEN, fields=fields, timeout=WATCH_DEADLINE) as without,
    ):
        assert next(watch).entries == [] and next(without).entries == []
        # From the version before, which this view never sent.
        kv.merge(key, {"status": "open"})
        kv.merge(key, {"n": BIG, "sub": {"a": 1.5}})
        kv.merge(key, {"tags": None})  # a member removed: null in the patch
        # A member set to null: RFC 7396 cannot say that, so there is no patch.
        kv.insert(key, {"status": "open", "n": BIG, "sub": {"a": None}})
        kv.insert(new, {"status": "open", "n": 1})  # nothing before it
        kv.delete(key)
        events = [next(watch) for _ in range(6)]
        plain = [next(without) for _ in range(6)]

    assert [(e.entry.key, e.view_change) for e in events] == [
        (key, "entered"),
        (key, "updated"),
        (key, "updated"),
        (key, "updated"),
        (new, "entered"),
        (key, "left"),
    ]
    assert [e.merge_patch for e in events] == [
        {"status": "open"},
        {"n": BIG, "sub": {"a": 1.5}},
        {"tags": None},
        None,
        None,
        None,
    ]
    assert type(events[1].merge_patch["n"]) is int
    assert events[1].merge_patch_json is not None and str(BIG) in events[1].merge_patch_json
    assert events[2].merge_patch_json == '{"tags":null}'
    assert [e.merge_patch_json for e in events[3:]] == [None] * 3
    assert [(e.revision, e.entry) for e in plain] == [(e.revision, e.entry) for e in events]
    assert [e.merge_patch for e in plain] == [None] * 6


def test_a_bad_filter_or_pointer_is_invalid_argument_naming_where(kv, prefix):
    kv.insert(prefix + "k", {"status": "open"})
    for query, where in [("value.status ==", "1:16"), ('value.a == "x" &&\n  value.(', "2:9")]:
        with pytest.raises(jsonkv_client.InvalidArgumentError) as failed:
            list(kv.list(prefix, filter=query))
        assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert f"invalid filter: {where}: Syntax error" in failed.value.details
        assert bad_request_fields(failed.value) == ["filter"]

    with (
        kv.watch_prefix(prefix, filter="value.status ==", timeout=WATCH_DEADLINE) as watch,
        pytest.raises(jsonkv_client.InvalidArgumentError) as failed,
    ):
        next(watch)
    assert "invalid filter: 1:16: Syntax error" in failed.value.details

    with pytest.raises(jsonkv_client.InvalidArgumentError) as failed:
        list(kv.list(prefix, fields=["/status", "n"]))
    assert 'invalid fields: [1] "n"' in failed.value.details
    with (
        kv.watch_prefix(prefix, fields=["/a~2"], timeout=WATCH_DEADLINE) as watch,
        pytest.raises(jsonkv_client.InvalidArgumentError) as failed,
    ):
        next(watch)
    assert 'invalid fields: [0] "/a~2"' in failed.value.details

    # What is not a filter or a list of pointers is refused before anything is sent.
    with pytest.raises(TypeError, match="sequence of JSON Pointers"):
        list(kv.list(prefix, fields="/status"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a filter is a str"):
        kv.watch_prefix(prefix, filter=True)  # type: ignore[arg-type]


def test_the_live_query_example_runs_to_completion(target):
    example = Path(__file__).resolve().parent.parent / "examples" / "example_live_query.py"
    done = subprocess.run(
        [sys.executable, str(example), target],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "list: example/orders/1 {'status': 'open', 'total': 250}",
        "watch: snapshot ['example/orders/1']",
        "watch: entered example/orders/2 {'status': 'open', 'total': 120} "
        "patch {'status': 'open'}",
        "watch: updated example/orders/1 {'status': 'open', 'total': 300} patch {'total': 300}",
        "watch: left example/orders/2",
        "done",
    ]
