"""The asyncio client (jsonkv_client.aio) against the real server: the sync client's features
through grpc.aio, each test its own event loop."""

import asyncio
import functools
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from servers import free_port

import jsonkv_client
import jsonkv_client.aio
from jsonkv_client import Compare, Delete, Entry, Event, Get, Insert, Patch, Snapshot

WATCH_DEADLINE = 30
BIG = 123456789012345678901234567890


def in_loop(test):
    """Runs an async test in a fresh event loop; the fixtures are the sync test's."""

    @functools.wraps(test)
    def run(*args, **kwargs):
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 120))

    return run


@in_loop
async def test_insert_get_list_delete_keep_values_exact(target, prefix):
    async with jsonkv_client.aio.connect(target) as kv:
        first = await kv.insert(prefix + "b", {"n": BIG, "f": 1.5, "s": "é"})
        assert first.create_revision == first.revision
        text = '{"exact":1.00000000000000000000001}'
        second = await kv.insert_json(prefix + "a", text)
        got = await kv.get(prefix + "b")
        assert got == Entry(
            prefix + "b", {"n": BIG, "f": 1.5, "s": "é"}, first.revision, first.revision, 1
        )
        assert (await kv.get(prefix + "a")).json == text  # every digit, which a float drops
        listed = [e async for e in kv.list(prefix, page_size=1)]
        assert [(e.key, e.mod_revision) for e in listed] == [
            (prefix + "a", second.revision),
            (prefix + "b", first.revision),
        ]
        assert (await kv.delete(prefix + "a")).deleted
        assert not (await kv.delete(prefix + "a", allow_missing=True)).deleted
        with pytest.raises(jsonkv_client.NotFoundError) as missing:
            await kv.get(prefix + "a")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
        assert (await kv.status()).revision >= first.revision


@in_loop
async def test_compare_and_swap_errors_carry_code_reason_and_metadata(target, prefix):
    key = prefix + "cas"
    async with jsonkv_client.aio.connect(target) as kv:
        created = (await kv.insert(key, "v1", expected_mod_revision=0)).revision
        swapped = (await kv.insert(key, "v2", expected_mod_revision=created)).revision
        with pytest.raises(jsonkv_client.FailedPreconditionError) as lost:
            await kv.insert(key, "v3", expected_mod_revision=created)
        error = lost.value
        assert error.code == grpc.StatusCode.FAILED_PRECONDITION
        assert error.reason == "REVISION_MISMATCH" and error.info.domain == "jsonkv.dev"
        assert error.info.metadata["current_mod_revision"] == str(swapped)
        assert "FAILED_PRECONDITION (REVISION_MISMATCH)" in str(error)
        with pytest.raises(jsonkv_client.InvalidArgumentError) as bad:
            await kv.insert("", "v")
        assert [v.field for v in bad.value.field_violations] == ["key"]
        with pytest.raises(jsonkv_client.InvalidArgumentError):
            await kv.lease_grant(0)


@in_loop
async def test_a_watch_sees_changes_and_resumes_with_its_store(target, prefix):
    async with jsonkv_client.aio.connect(target) as kv:
        existing = (await kv.insert(prefix + "a", 1)).revision
        async with kv.watch_prefix(prefix, timeout=WATCH_DEADLINE, prev_kv=True) as watch:
            snapshot = await anext(watch)
            assert isinstance(snapshot, Snapshot) and snapshot.revision >= existing
            assert [e.value for e in snapshot.entries] == [1]
            put = (await kv.insert(prefix + "a", 2)).revision
            event = await anext(watch)
            assert isinstance(event, Event)
            assert (event.type, event.revision, event.entry.value) == ("put", put, 2)
            assert event.prev_entry.value == 1
            resume, store = watch.resume_revision, watch.store_id
        assert resume == put + 1 and store

        missed = (await kv.delete(prefix + "a")).revision
        async with kv.watch_prefix(
            prefix, start_revision=resume, store_id=store, timeout=WATCH_DEADLINE
        ) as resumed:
            replayed = await anext(resumed)
            assert (replayed.type, replayed.revision) == ("delete", missed)
            assert await resumed.wait_store_id() == store

        async with kv.watch_key(
            prefix + "a", start_revision=resume, store_id="another-store", timeout=WATCH_DEADLINE
        ) as refused:
            with pytest.raises(jsonkv_client.FailedPreconditionError) as mismatch:
                await anext(refused)
        assert mismatch.value.reason == "STORE_MISMATCH"


@in_loop
async def test_a_watch_resumes_by_itself_across_a_server_restart(start_server):
    server = start_server()
    async with jsonkv_client.aio.connect(server.addr) as kv:
        async with kv.watch_key("k", timeout=WATCH_DEADLINE) as watch:
            assert (await anext(watch)).entries == []
            first = (await kv.insert("k", 1)).revision
            assert (await anext(watch)).revision == first
            await asyncio.to_thread(server.restart)
            later = [(await kv.insert("k", n)).revision for n in (2, 3)]
            events = [await anext(watch) for _ in later]
            assert [(e.revision, e.entry.value) for e in events] == list(zip(later, [2, 3]))


@in_loop
async def test_a_watch_deadline_ends_it_and_a_cancel_stops_it(target, prefix):
    async with jsonkv_client.aio.connect(target) as kv:
        async with kv.watch_key(prefix + "quiet", timeout=1) as watch:
            await anext(watch)
            with pytest.raises(jsonkv_client.DeadlineExceededError):
                await anext(watch)
        watch = kv.watch_key(prefix + "k", timeout=WATCH_DEADLINE)
        await anext(watch)
        asyncio.get_running_loop().call_later(0.2, watch.cancel)
        assert [item async for item in watch] == []


@in_loop
async def test_leases_grant_keep_alive_and_revoke(target, prefix):
    async with jsonkv_client.aio.connect(target) as kv:
        granted = await kv.lease_grant(30)
        assert granted.id in await kv.lease_list()
        assert await kv.lease_keep_alive(granted.id) == 30
        await kv.insert(prefix + "k", "v", lease=granted.id)
        status = await kv.lease_time_to_live(granted.id, keys=True)
        assert list(status.keys) == [prefix + "k"]
        assert await kv.lease_revoke(granted.id) > 0
        with pytest.raises(jsonkv_client.NotFoundError):
            await kv.get(prefix + "k")
        with pytest.raises(jsonkv_client.NotFoundError):
            await kv.lease_keep_alive(granted.id)

        # A handle keeps a 2 s lease alive well past its TTL, and revokes it when closed.
        async with kv.lease(2) as lease:
            await kv.insert(prefix + "kept", 1, lease=lease.id)
            await asyncio.sleep(4.5)
            assert (await kv.get(prefix + "kept")).lease == lease.id
            assert not lease.lost
        assert lease.id not in await kv.lease_list()

        lease = await kv.lease(3)
        await kv.lease_revoke(lease.id)  # as if it expired
        assert await lease.wait_lost(timeout=10)
        await lease.close()  # nothing left to revoke


@in_loop
async def test_lock_holders_never_overlap_and_a_timeout_gives_up(target, prefix):
    name = prefix + "lock"
    holding = []
    active = 0

    async def work(kv):
        nonlocal active
        for _ in range(3):
            async with kv.lock(name, ttl=10, timeout=30) as lock:
                active += 1
                holding.append((active, lock.create_revision))
                await asyncio.sleep(0.01)
                active -= 1

    clients = [jsonkv_client.aio.connect(target) for _ in range(3)]
    try:
        await asyncio.gather(*(work(kv) for kv in clients))
        assert [count for count, _ in holding] == [1] * 9
        revisions = [revision for _, revision in holding]
        assert revisions == sorted(revisions)

        held = await clients[0].lock(name, ttl=10)
        with pytest.raises(jsonkv_client.DeadlineExceededError, match="not acquired in time"):
            await clients[1].lock(name, ttl=10, timeout=0.5)
        await held.release()
        assert [e async for e in clients[0].list(name + "/")] == []
    finally:
        for kv in clients:
            await kv.close()


@in_loop
async def test_txn_and_patches(target, prefix):
    a, b = prefix + "a", prefix + "b"
    async with jsonkv_client.aio.connect(target) as kv:
        a_rev = (await kv.insert(a, {"n": 1})).revision
        result = await kv.txn(
            compare=[Compare(a, mod_revision=a_rev), Compare(b, exists=False)],
            success=[Insert(b, BIG), Patch(a, {"m": 2}), Get(a)],
            failure=[Get(a)],
        )
        assert result.succeeded
        inserted, patched, got = result.results
        assert inserted.revision == patched.mod_revision == result.revision
        assert got == Entry(a, {"n": 1, "m": 2}, a_rev, result.revision, 2)

        again = await kv.txn(compare=[Compare(a, mod_revision=a_rev)], failure=[Get(b)])
        assert not again.succeeded and again.results[0].value == BIG
        with pytest.raises(jsonkv_client.FailedPreconditionError):
            await kv.txn(success=[Delete(a, expected_mod_revision=a_rev)])

        merged = await kv.merge(a, {"n": None})
        assert merged.value == {"m": 2}
        applied = await kv.patch(a, json_patch=[{"op": "add", "path": "/l", "value": [BIG]}])
        assert applied.value == {"m": 2, "l": [BIG]}
        with pytest.raises(jsonkv_client.FailedPreconditionError) as failed:
            await kv.patch(a, json_patch=[{"op": "test", "path": "/m", "value": 3}])
        assert failed.value.reason == "PATCH_TEST_FAILED"
        with pytest.raises(jsonkv_client.NotFoundError):
            await kv.patch(prefix + "absent", json_patch=[])


@in_loop
async def test_tls_tokens_and_failover(start_server, pki, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("write secret\n")
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    server = start_server(
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--auth-tokens",
        str(tokens),
    )
    addresses = [f"https://{dead}", f"https://{server.addr}"]
    async with jsonkv_client.aio.connect(addresses, ca=pki.ca, token="secret") as kv:
        await kv.insert("k", "v")  # the first server is down: the write never left, so it moves on
        assert (await kv.get("k")).value == "v"
        assert kv.address == f"https://{server.addr}"
    async with jsonkv_client.aio.connect(addresses[1], ca=pki.ca, token="wrong") as kv:
        with pytest.raises(jsonkv_client.UnauthenticatedError):
            await kv.get("k")


def test_the_async_example_runs_to_completion(target):
    example = Path(__file__).resolve().parent.parent / "examples" / "example_async.py"
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
    assert lines[6].startswith("resumed after ") and ": delete at revision " in lines[6]
    assert lines[-3:] == [lines[-3], "lock: released", "done"]
    assert lines[-3].startswith("lock: holding example/async-lock/")


OPEN = 'value.status == "open"'


@in_loop
async def test_live_queries_filter_project_and_diff(target, prefix):
    a, b, c = prefix + "a", prefix + "b", prefix + "c"
    async with jsonkv_client.aio.connect(target) as kv:
        await kv.insert(a, {"status": "open", "n": 1, "secret": "x"})
        await kv.insert(b, {"status": "closed", "n": BIG})
        await kv.insert(c, {"status": "open", "n": 3})
        listed = [e async for e in kv.list(prefix, page_size=1, filter=OPEN, fields=["/n"])]
        assert [(e.key, e.value) for e in listed] == [(a, {"n": 1}), (c, {"n": 3})]

        async with kv.watch_prefix(
            prefix, filter=OPEN, fields=["/status", "/n"], diff=True, timeout=WATCH_DEADLINE
        ) as watch:
            snapshot = await anext(watch)
            assert isinstance(snapshot, Snapshot)
            assert [e.key for e in snapshot.entries] == [a, c]
            await kv.merge(b, {"n": 2})  # outside the view: nothing
            entered = (await kv.merge(b, {"status": "open"})).mod_revision
            updated = (await kv.merge(a, {"n": BIG, "secret": "y"})).mod_revision
            events = [await anext(watch) for _ in range(2)]
            resume, store = watch.resume_revision, watch.store_id
        assert [(e.type, e.entry.key, e.revision, e.view_change) for e in events] == [
            ("put", b, entered, "entered"),
            ("put", a, updated, "updated"),
        ]
        assert [e.entry.value for e in events] == [
            {"status": "open", "n": 2},
            {"status": "open", "n": BIG},
        ]
        assert [e.merge_patch for e in events] == [{"status": "open"}, {"n": BIG}]

        # Resumed from where it stopped, with the same query: the same view.
        left = (await kv.delete(c)).revision
        await kv.insert(prefix + "d", {"status": "closed"})  # outside the view: nothing
        again = (await kv.merge(a, {"n": 5})).mod_revision
        async with kv.watch_prefix(
            prefix,
            start_revision=resume,
            store_id=store,
            filter=OPEN,
            fields=["/status", "/n"],
            diff=True,
            timeout=WATCH_DEADLINE,
        ) as resumed:
            replayed = [await anext(resumed) for _ in range(2)]
        assert [(e.type, e.entry.key, e.revision, e.view_change) for e in replayed] == [
            ("delete", c, left, "left"),
            ("put", a, again, "updated"),
        ]
        assert replayed[1].merge_patch == {"n": 5}

        with pytest.raises(jsonkv_client.InvalidArgumentError) as bad:
            [e async for e in kv.list(prefix, filter="value.status ==")]
        assert "invalid filter: 1:16: Syntax error" in bad.value.details
        async with kv.watch_prefix(prefix, filter="value.(", timeout=WATCH_DEADLINE) as watch:
            with pytest.raises(jsonkv_client.InvalidArgumentError) as bad:
                await anext(watch)
        assert "invalid filter: 1:7: Syntax error" in bad.value.details


@in_loop
async def test_a_filtered_watch_resumes_by_itself_across_a_server_restart(start_server):
    server = start_server()
    async with jsonkv_client.aio.connect(server.addr) as kv:
        await kv.insert("o/a", {"status": "open", "n": 1, "secret": "x"})
        async with kv.watch_prefix(
            "o/", filter=OPEN, fields=["/n"], diff=True, timeout=WATCH_DEADLINE
        ) as watch:
            assert [e.value for e in (await anext(watch)).entries] == [{"n": 1}]
            first = (await kv.merge("o/a", {"n": 2})).mod_revision
            assert (await anext(watch)).revision == first
            await asyncio.to_thread(server.restart)
            await kv.insert("o/b", {"status": "closed", "n": 9})  # outside the view: nothing
            updated = (await kv.merge("o/a", {"n": 3, "secret": "y"})).mod_revision
            left = (await kv.merge("o/a", {"status": "closed"})).mod_revision
            events = [await anext(watch) for _ in range(2)]
    assert [(e.revision, e.view_change, e.entry.value, e.merge_patch) for e in events] == [
        (updated, "updated", {"n": 3}, {"n": 3}),
        (left, "left", None, None),
    ]
