"""How the sync client reaches servers, against servers of each test's own: TLS, mutual TLS,
tokens, timeouts, several addresses, and watches that resume by themselves across a restart
and refuse to resume on another store. Bad settings fail at once with a clear message."""

import threading
import time

import grpc
import pytest
from servers import BlackHole, free_port

import jsonkv_client

WATCH_DEADLINE = 30


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text("write writer-token\nread reader-token\nwrite scoped-token allowed/\n")
    return path


def test_tls_with_a_private_ca_and_tokens(start_server, pki, tokens):
    server = start_server(
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--auth-tokens",
        str(tokens),
    )
    https = f"https://{server.addr}"
    with jsonkv_client.connect(https, ca=pki.ca, token="writer-token") as kv:
        kv.insert("greeting", {"n": 2**70})
        assert kv.get("greeting").value == {"n": 2**70}
        assert [e.key for e in kv.list()] == ["greeting"]

    # The CA as PEM bytes rather than a path.
    with jsonkv_client.connect(https, ca=pki.ca.read_bytes(), token="reader-token") as kv:
        assert kv.get("greeting").value == {"n": 2**70}
        with pytest.raises(jsonkv_client.PermissionDeniedError) as denied:
            kv.insert("greeting", 1)
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED

    with jsonkv_client.connect(https, ca=pki.ca, token="scoped-token") as kv:
        kv.insert("allowed/k", 1)
        with pytest.raises(jsonkv_client.PermissionDeniedError):
            kv.get("greeting")

    for token in (None, "no-such-token"):
        with jsonkv_client.connect(https, ca=pki.ca, token=token) as kv:
            with pytest.raises(jsonkv_client.UnauthenticatedError):
                kv.get("greeting")

    # Plaintext to a TLS port, or TLS without trusting the CA: the connection fails.
    with jsonkv_client.connect(server.addr, token="writer-token", timeout=5) as kv:
        with pytest.raises(jsonkv_client.UnavailableError):
            kv.get("greeting")
    with jsonkv_client.connect(https, token="writer-token", timeout=5) as kv:
        with pytest.raises(jsonkv_client.UnavailableError):
            kv.get("greeting")


def test_mutual_tls_needs_the_client_certificate(start_server, pki):
    server = start_server(
        "--tls-cert",
        str(pki.server_cert),
        "--tls-key",
        str(pki.server_key),
        "--tls-client-ca",
        str(pki.ca),
    )
    https = f"https://{server.addr}"
    with jsonkv_client.connect(https, ca=pki.ca, cert=pki.client_cert, key=pki.client_key) as kv:
        kv.insert("k", "mutual")
        with kv.watch_key("k", timeout=WATCH_DEADLINE) as watch:
            assert next(watch).entries[0].value == "mutual"
    with jsonkv_client.connect(https, ca=pki.ca, timeout=5) as kv:
        with pytest.raises(jsonkv_client.UnavailableError):
            kv.get("k")


def test_a_server_that_is_down_is_passed_over_for_reads_and_writes(target):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    with jsonkv_client.connect([dead, target]) as kv:
        # The write never left (no connection could be made), so it may go to the next server.
        revision = kv.insert("py/failover/k", "v").revision
        assert kv.address == f"http://{target}"
        assert kv.get("py/failover/k").mod_revision == revision


def test_a_call_held_by_a_hung_server_times_out_and_the_client_moves_on(target):
    hole = BlackHole()
    try:
        with jsonkv_client.connect(f"{hole.addr},{target}", timeout=1) as kv:
            started = time.monotonic()
            with pytest.raises(jsonkv_client.DeadlineExceededError) as slow:
                kv.insert("py/hole/k", "v")
            assert isinstance(slow.value, TimeoutError)
            assert 0.9 < time.monotonic() - started < 5
            # The server that held the call is left like one that is down.
            assert kv.address == f"http://{target}"
            with pytest.raises(jsonkv_client.NotFoundError):
                kv.get("py/hole/k")
    finally:
        hole.close()


def test_a_read_that_times_out_on_a_hung_server_fails_in_time(target):
    hole = BlackHole()
    try:
        with jsonkv_client.connect([hole.addr, target], timeout=1) as kv:
            started = time.monotonic()
            with pytest.raises(jsonkv_client.DeadlineExceededError):
                kv.get("py/hole/anything")
            assert time.monotonic() - started < 5
            kv.insert("py/hole/read", 1)
            assert kv.get("py/hole/read").value == 1
    finally:
        hole.close()


def test_a_watch_resumes_by_itself_across_a_server_restart(start_server):
    server = start_server()
    with jsonkv_client.connect(server.addr) as kv:
        before = kv.insert("w/a", 1).revision
        with kv.watch_prefix("w/", timeout=WATCH_DEADLINE) as watch:
            snapshot = next(watch)
            assert [e.key for e in snapshot.entries] == ["w/a"]
            store = watch.store_id
            seen = kv.insert("w/b", 2).revision
            assert next(watch).revision == seen

            server.restart()  # durable: the same store, resumed from its log
            later = [kv.insert("w/c", 3).revision, kv.delete("w/a").revision]
            events = [next(watch) for _ in later]
            assert [(e.type, e.entry.key, e.revision) for e in events] == [
                ("put", "w/c", later[0]),
                ("delete", "w/a", later[1]),
            ]
            assert watch.store_id == store
            assert watch.resume_revision == later[1] + 1
    assert snapshot.revision == before


def test_a_filtered_watch_resumes_by_itself_across_a_restart_as_the_same_view(start_server):
    server = start_server()
    open_ = 'value.status == "open"'
    with jsonkv_client.connect(server.addr) as kv:
        kv.insert("o/a", {"status": "open", "n": 1, "secret": "x"})
        kv.insert("o/b", {"status": "closed", "n": 2, "secret": "y"})
        with kv.watch_prefix(
            "o/", filter=open_, fields=["/status", "/n"], diff=True, timeout=WATCH_DEADLINE
        ) as watch:
            snapshot = next(watch)
            assert [(e.key, e.value) for e in snapshot.entries] == [
                ("o/a", {"status": "open", "n": 1})
            ]
            entered = kv.merge("o/b", {"status": "open"}).mod_revision
            first = next(watch)
            assert (first.revision, first.view_change, first.merge_patch) == (
                entered,
                "entered",
                {"status": "open"},
            )

            server.restart()  # durable: the same store and history, resumed from its log
            # Written before the watch notices the restart: it gets them from history.
            updated = kv.merge("o/a", {"n": 10, "secret": "z"}).mod_revision
            kv.insert("o/c", {"status": "closed", "n": 3})  # outside the view: nothing
            left = kv.merge("o/b", {"status": "closed"}).mod_revision
            again = kv.insert("o/c", {"status": "open", "n": 3}).revision
            events = [next(watch) for _ in range(3)]
            assert watch.resume_revision == again + 1
            # The view goes on exactly: what came last before the restart is not sent again,
            # and the next live change follows.
            live = kv.merge("o/c", {"n": 4}).mod_revision
            events.append(next(watch))

    assert [(e.type, e.entry.key, e.revision, e.view_change) for e in events] == [
        ("put", "o/a", updated, "updated"),
        ("delete", "o/b", left, "left"),
        ("put", "o/c", again, "entered"),
        ("put", "o/c", live, "updated"),
    ]
    # The fields and the diff were asked for again too.
    assert [e.entry.value for e in events] == [
        {"status": "open", "n": 10},
        None,
        {"status": "open", "n": 3},
        {"status": "open", "n": 4},
    ]
    assert [e.merge_patch for e in events] == [{"n": 10}, None, {"status": "open"}, {"n": 4}]


def test_a_watch_never_resumes_on_another_store(start_server):
    first = start_server("--in-memory")
    other = start_server("--in-memory")
    with jsonkv_client.connect([first.addr, other.addr]) as kv:
        kv.insert("k", 1)
        with kv.watch_key("k", timeout=WATCH_DEADLINE) as watch:
            assert next(watch).entries[0].value == 1
            store = watch.store_id
            first.stop()
            # The resume goes to the next server, whose store never had these revisions.
            with pytest.raises(jsonkv_client.FailedPreconditionError) as refused:
                next(watch)
    assert refused.value.reason == "STORE_MISMATCH"
    assert refused.value.info.metadata["store_id"] != store


def test_a_cancelled_watch_stops_iterating(kv, prefix):
    watch = kv.watch_key(prefix + "k", timeout=WATCH_DEADLINE)
    assert isinstance(next(watch), jsonkv_client.Snapshot)
    threading.Timer(0.2, watch.cancel).start()
    assert list(watch) == []


@pytest.mark.parametrize(
    "addresses, message",
    [
        ("", "none of them empty"),
        ("127.0.0.1:1,,127.0.0.1:2", "none of them empty"),
        ([], "none of them empty"),
        ("ftp://x:1", "give host:port"),
        ("http://x:1/path", "give host:port"),
    ],
)
def test_a_bad_address_list_is_refused_at_once(addresses, message):
    with pytest.raises(ValueError, match=message):
        jsonkv_client.connect(addresses)


def test_bad_tls_and_token_settings_are_refused_at_once(pki, tmp_path):
    with pytest.raises(ValueError, match="127.0.0.1:1 is not an https:// address"):
        jsonkv_client.connect("127.0.0.1:1", ca=pki.ca)
    with pytest.raises(ValueError, match="give both cert and key"):
        jsonkv_client.connect("https://127.0.0.1:1", cert=pki.client_cert)
    with pytest.raises(ValueError, match="cannot read the CA file"):
        jsonkv_client.connect("https://127.0.0.1:1", ca=tmp_path / "missing.pem")
    with pytest.raises(ValueError, match="token"):
        jsonkv_client.connect("127.0.0.1:1", token="two words")
    with pytest.raises(TypeError, match="a key is a str"):
        jsonkv_client.connect("127.0.0.1:1").get(b"bytes")  # type: ignore[arg-type]
