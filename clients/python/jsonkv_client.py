"""A thin Python client for jsonkv (service jsonkv.v1.JsonKv over gRPC).

Values travel as JSON text (`value_json`, responses asked for with VALUE_ENCODING_JSON), the
contract's lossless path: Python's json module keeps integers of any size exactly. The stubs come
from gen/, which `python gen_stubs.py` writes from the proto.

Leases: `lease_grant`, `lease_keep_alive`, `lease_revoke`, `lease_time_to_live` and `lease_list`
are the bare calls (lease ids are ints, exact at any size); `insert(..., lease=id)` attaches a key,
which goes when the lease expires or is revoked. `with client.lease(ttl) as lease:` grants one
and keeps it alive from a background thread until the block ends, then revokes it. Locks:
`with client.lock(name, ttl=...) as lock:` holds a lock built on a lease the way etcd's
concurrency package builds one, so a holder that dies releases it once its lease expires.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

_GEN = Path(__file__).resolve().parent / "gen"
if not (_GEN / "jsonkv" / "v1" / "jsonkv_pb2.py").is_file():
    raise ImportError(f"no generated stubs in {_GEN}: run `python gen_stubs.py` first")
sys.path.insert(0, str(_GEN))
from jsonkv.v1 import jsonkv_pb2 as pb  # noqa: E402
from jsonkv.v1 import jsonkv_pb2_grpc as pb_grpc  # noqa: E402

DEFAULT_TARGET = "127.0.0.1:50051"
# Every unary call gets a deadline, so no call can hang forever.
DEFAULT_TIMEOUT = 10.0
# The response header of every watch stream that names the store its revisions belong to.
STORE_ID_HEADER = "jsonkv-store-id"
_JSON = pb.VALUE_ENCODING_JSON


def to_json(value: Any) -> str:
    """Compact JSON text; NaN and infinities are not JSON, so they are refused here."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


@dataclass(frozen=True)
class Entry:
    """A stored key: its value and revision metadata. `value` is None for a deleted key.
    `lease` is the lease the key is attached to, 0 if none."""

    key: str
    value: Any
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def from_pb(cls, kv: pb.KeyValue) -> Entry:
        value = json.loads(kv.value_json) if kv.value_json else None
        return cls(kv.key, value, kv.create_revision, kv.mod_revision, kv.version, kv.lease)


@dataclass(frozen=True)
class Snapshot:
    """The watched keys at `revision`; every later change follows as an Event."""

    revision: int
    entries: list[Entry]


@dataclass(frozen=True)
class Event:
    """One change: `type` is "put" or "delete". A delete that a lease's end caused names the
    `lease` and the `cause`, "expired" or "revoked"; any other event has `lease` 0 and `cause`
    None (a put shows the key's lease in `entry.lease`). On a cluster (`--etcd`) a lease's
    deletes come as plain deletes."""

    type: str
    entry: Entry
    revision: int
    lease: int = 0
    cause: str | None = None


_EVENT_TYPES = {pb.Event.EVENT_TYPE_PUT: "put", pb.Event.EVENT_TYPE_DELETE: "delete"}
_CAUSES = {pb.Event.CAUSE_EXPIRED: "expired", pb.Event.CAUSE_REVOKED: "revoked"}


class Watch:
    """Iterates one watch stream: a Snapshot (unless started from a revision), then Events.

    A snapshot sent in several messages comes out as one Snapshot. Progress notices are consumed
    here: they only advance `resume_revision`, the `start_revision` that resumes this watch
    after everything it has seen; resume with `store_id` too, and with `resume_seen_keys`, the
    keys already seen of a change of several keys at one revision that the stream stopped in the
    middle of (`Event.more_at_revision`; empty otherwise). `cancel()` (or leaving a `with` block)
    ends the stream.
    """

    def __init__(self, call: Any, start_revision: int = 0, seen_keys: Iterable[str] = ()):
        self._call = call
        # A watch started at a revision resumes there until it has seen something: 0 would
        # ask for a snapshot instead of the events the caller asked for.
        self.resume_revision = start_revision
        # Keys of `resume_revision` already seen: a change of several keys at one revision was
        # cut short, and the resume replays it whole. Pass them back as `seen_keys`.
        self.resume_seen_keys: frozenset[str] = frozenset(seen_keys)

    @property
    def store_id(self) -> str:
        """The store this watch's revisions belong to (the stream's `jsonkv-store-id` header):
        resume with it next to `resume_revision`, since resuming from another store's revisions
        would silently skip changes. Waits for the headers; "" if the stream ended without them."""
        return dict(self._call.initial_metadata()).get(STORE_ID_HEADER, "")

    def __iter__(self) -> Iterator[Snapshot | Event]:
        return self

    def __next__(self) -> Snapshot | Event:
        parts: list[Entry] = []
        for msg in self._call:
            kind = msg.WhichOneof("response")
            if kind == "progress":
                self._seen(msg.progress.revision)
            elif kind == "snapshot":
                parts.extend(Entry.from_pb(kv) for kv in msg.snapshot.kvs)
                if msg.snapshot.last:
                    self._seen(msg.snapshot.revision)
                    return Snapshot(msg.snapshot.revision, parts)
            elif kind == "event":
                revision, key = msg.event.revision, msg.event.kv.key
                if revision == self.resume_revision and key in self.resume_seen_keys:
                    continue  # seen before this watch resumed
                if msg.event.more_at_revision:
                    # More of this revision follows: resume at it, not after it.
                    self.resume_revision = revision
                    self.resume_seen_keys = self.resume_seen_keys | {key}
                else:
                    self._seen(revision)
                event_type = _EVENT_TYPES.get(msg.event.type, "unspecified")
                return Event(
                    event_type,
                    Entry.from_pb(msg.event.kv),
                    revision,
                    msg.event.lease,
                    _CAUSES.get(msg.event.cause),
                )
        raise StopIteration

    def _seen(self, revision: int) -> None:
        if revision + 1 > self.resume_revision:
            self.resume_revision = revision + 1
            self.resume_seen_keys = frozenset()

    def cancel(self) -> None:
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Lease:
    """A granted lease that a background thread keeps alive, calling LeaseKeepAlive every third
    of its TTL, until `close()` (or leaving a `with` block) stops the thread and revokes it,
    deleting the keys attached to it. Get one from `Client.lease`.

    A keep-alive that fails for a passing reason (UNAVAILABLE, a deadline) is tried again at the
    next third. One answered NOT_FOUND means the lease is gone (it expired before a keep-alive
    got through, or was revoked elsewhere), and so are its keys: `lost` turns True, the thread
    stops, and `close()` has nothing left to revoke.
    """

    def __init__(self, client: Client, id: int, ttl_seconds: int):
        self.id = id
        # The TTL granted, which each keep-alive restarts.
        self.ttl_seconds = ttl_seconds
        self._client = client
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._closed = False
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"jsonkv-lease-{id:x}", daemon=True
        )
        self._thread.start()

    @property
    def lost(self) -> bool:
        """Whether a keep-alive found the lease no longer live."""
        return self._lost.is_set()

    def wait_lost(self, timeout: float | None = None) -> bool:
        """Waits up to `timeout` seconds (None: for ever) for the lease to be lost; `lost`."""
        return self._lost.wait(timeout)

    def _keep_alive(self) -> None:
        period = self.ttl_seconds / 3
        next_at = time.monotonic() + period
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + period
            try:
                # A keep-alive that hangs must not hold up the next one.
                self._client.stub.LeaseKeepAlive(
                    pb.LeaseKeepAliveRequest(id=self.id),
                    timeout=min(self._client.timeout, period),
                )
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    self._lost.set()
                    return
            except ValueError:
                return  # the client's channel was closed under the lease

    def close(self) -> None:
        """Stops the keep-alives and revokes the lease (unless it was lost). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        # The keep-alive in flight has a deadline, so this join is bounded.
        self._thread.join()
        if not self.lost:
            try:
                self._client.lease_revoke(self.id)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Lock:
    """A held lock: `Client.lock` returns one once it holds it. `release()` (or leaving a
    `with` block) revokes the lease, which deletes `key` and hands the lock to the next waiter.

    The lock is held only while its lease lives: if a keep-alive finds the lease gone (`lost`),
    another holder may already have the lock. `create_revision` (our key's) grows with every
    acquisition of the lock, so it can serve as a fencing token.
    """

    def __init__(self, name: str, key: str, lease: Lease, create_revision: int):
        self.name = name
        self.key = key
        self.lease = lease
        self.create_revision = create_revision

    @property
    def lost(self) -> bool:
        return self.lease.lost

    def release(self) -> None:
        self.lease.close()

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Client:
    """A connection to one jsonkv server. Errors are raised as grpc.RpcError."""

    def __init__(self, target: str = DEFAULT_TARGET, timeout: float = DEFAULT_TIMEOUT):
        self._channel = grpc.insecure_channel(target)
        # The generated stub, for whatever the helpers leave out.
        self.stub = pb_grpc.JsonKvStub(self._channel)
        self.timeout = timeout

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, key: str) -> Entry:
        response = self.stub.Get(pb.GetRequest(key=key, value_encoding=_JSON), timeout=self.timeout)
        return Entry.from_pb(response.kv)

    def insert(
        self,
        key: str,
        value: Any,
        expected_mod_revision: int | None = None,
        lease: int = 0,
    ) -> pb.InsertResponse:
        """Stores `value`; with `expected_mod_revision`, only if the key's mod revision is that
        (0: only if absent). `lease` attaches the key to that live lease (NOT_FOUND, and nothing
        written, if it is not live); 0 detaches it from any. Returns the response: its
        `revision` is the key's new mod revision."""
        request = pb.InsertRequest(
            key=key,
            value_json=to_json(value),
            expected_mod_revision=expected_mod_revision,
            lease=lease,
        )
        return self.stub.Insert(request, timeout=self.timeout)

    def delete(
        self,
        key: str,
        expected_mod_revision: int | None = None,
        allow_missing: bool = False,
    ) -> pb.DeleteResponse:
        request = pb.DeleteRequest(
            key=key, expected_mod_revision=expected_mod_revision, allow_missing=allow_missing
        )
        return self.stub.Delete(request, timeout=self.timeout)

    def list(self, prefix: str = "", page_size: int = 0, min_revision: int = 0) -> Iterator[Entry]:
        """Every key under `prefix` in key order, fetching a page at a time. With
        `min_revision`, each page is read once the server has applied that revision."""
        token = ""
        while True:
            response = self.stub.List(
                pb.ListRequest(
                    prefix=prefix,
                    page_size=page_size,
                    page_token=token,
                    value_encoding=_JSON,
                    min_revision=min_revision,
                ),
                timeout=self.timeout,
            )
            yield from (Entry.from_pb(kv) for kv in response.kvs)
            token = response.next_page_token
            if not token:
                return

    def watch_key(
        self,
        key: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
    ) -> Watch:
        """Watches one key; `timeout` (seconds, None for none) bounds the whole stream. To resume
        an earlier watch, pass its `resume_revision`, `store_id` and `resume_seen_keys` (as
        `seen_keys`): the watch then fails with FAILED_PRECONDITION (STORE_MISMATCH,
        STORE_BEHIND) where resuming would skip changes, and repeats none it saw."""
        request = pb.WatchKeyRequest(
            key=key, start_revision=start_revision, value_encoding=_JSON, store_id=store_id
        )
        return Watch(self.stub.WatchKey(request, timeout=timeout), start_revision, seen_keys)

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
    ) -> Watch:
        """Watches every key under `prefix`; the arguments are as in `watch_key`."""
        request = pb.WatchPrefixRequest(
            prefix=prefix, start_revision=start_revision, value_encoding=_JSON, store_id=store_id
        )
        return Watch(self.stub.WatchPrefix(request, timeout=timeout), start_revision, seen_keys)

    def lease_grant(self, ttl_seconds: int, id: int | None = None) -> pb.LeaseGrantResponse:
        """Grants a lease of `ttl_seconds` (1 to 31536000, else INVALID_ARGUMENT), with `id` if
        given (ALREADY_EXISTS if that lease is live), else one the server picks. Returns the
        response: its `id` and the `ttl_seconds` granted. Nothing keeps it alive: see `lease`."""
        request = pb.LeaseGrantRequest(ttl_seconds=ttl_seconds, id=id or 0)
        return self.stub.LeaseGrant(request, timeout=self.timeout)

    def lease_keep_alive(self, id: int) -> int:
        """Restarts the lease's TTL, once; returns the TTL. NOT_FOUND if it is not live."""
        request = pb.LeaseKeepAliveRequest(id=id)
        return self.stub.LeaseKeepAlive(request, timeout=self.timeout).ttl_seconds

    def lease_revoke(self, id: int) -> int:
        """Ends the lease now, deleting every key attached to it at one revision, which it
        returns. NOT_FOUND if it is not live."""
        request = pb.LeaseRevokeRequest(id=id)
        return self.stub.LeaseRevoke(request, timeout=self.timeout).revision

    def lease_time_to_live(self, id: int, keys: bool = False) -> pb.LeaseTimeToLiveResponse:
        """The lease's `ttl_seconds` left (rounded up), its `granted_ttl_seconds` and, with
        `keys`, the `keys` attached to it in key order. NOT_FOUND if it is not live."""
        request = pb.LeaseTimeToLiveRequest(id=id, keys=keys)
        return self.stub.LeaseTimeToLive(request, timeout=self.timeout)

    def lease_list(self) -> list[int]:
        """The ids of every live lease, in order."""
        return list(self.stub.LeaseList(pb.LeaseListRequest(), timeout=self.timeout).ids)

    def lease(self, ttl_seconds: int, id: int | None = None) -> Lease:
        """Grants a lease (as `lease_grant`) and keeps it alive until the Lease is closed:
        `with client.lease(10) as lease: client.insert(key, value, lease=lease.id)`."""
        granted = self.lease_grant(ttl_seconds, id)
        return Lease(self, granted.id, granted.ttl_seconds)

    def lock(self, name: str, ttl: int = 60, timeout: float | None = None) -> Lock:
        """Waits until this client holds the lock `name`, then returns it: `with
        client.lock("jobs/nightly", ttl=10, timeout=30) as lock: ...`. Raises TimeoutError if
        `timeout` seconds (None: no limit) pass first.

        As etcd's concurrency.Mutex: a lease of `ttl` seconds (kept alive while held) owns the
        key `<name>/<lease id in hex>`, created only if absent. The holder is the key under
        `<name>/` with the lowest create revision; every other waiter watches the key created
        just before its own until that is deleted, then looks again, so waiters get the lock in
        the order they asked and a release wakes only the next. A holder that dies without
        releasing holds the lock until its lease expires, `ttl` seconds at most. Keys of another
        lock named under `<name>/` do not count.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        lease = self.lease(ttl)
        try:
            prefix = f"{name}/"
            key = f"{prefix}{lease.id:x}"
            mine = self.insert(key, None, expected_mod_revision=0, lease=lease.id).create_revision
            while True:
                # Each page is read once the server has our key: none created before it hides.
                waiters = [
                    entry
                    for entry in self.list(prefix, min_revision=mine)
                    if "/" not in entry.key[len(prefix) :]
                ]
                if not any(entry.key == key for entry in waiters):
                    raise RuntimeError(f"lock {name!r}: {key} was deleted while waiting")
                before = [entry for entry in waiters if entry.create_revision < mine]
                if not before:
                    return Lock(name, key, lease, mine)
                predecessor = max(before, key=lambda entry: entry.create_revision)
                self._wait_deleted(predecessor, deadline, name)
        except BaseException:
            # The lease would expire anyway: the error that matters is the one that got us here.
            with contextlib.suppress(grpc.RpcError):
                lease.close()
            raise

    def _wait_deleted(self, entry: Entry, deadline: float | None, name: str) -> None:
        """Returns once `entry` (that incarnation of the key) is gone, or the stream ends."""
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise TimeoutError(f"lock {name!r} not acquired in time")
        try:
            with self.watch_key(entry.key, timeout=timeout) as watch:
                for item in watch:
                    if isinstance(item, Snapshot):
                        if [e.create_revision for e in item.entries] != [entry.create_revision]:
                            return
                    elif item.type == "delete":
                        return
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None:
                raise TimeoutError(f"lock {name!r} not acquired in time") from error
            raise


def connect(target: str = DEFAULT_TARGET, timeout: float = DEFAULT_TIMEOUT) -> Client:
    return Client(target, timeout)


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The google.rpc.ErrorInfo detail of a failed call (REVISION_MISMATCH, REVISION_COMPACTED,
    STORE_MISMATCH, ...), or None when it has none."""
    status = rpc_status.from_call(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
