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

Transactions and patches: `patch(key, merge)` (or `merge(key, obj)`) applies an RFC 7396 merge
patch on the server, `patch(key, json_patch=[...])` an RFC 6902 JSON Patch; both return the
resulting Entry. `txn(compare=[...], success=[...], failure=[...])` takes `Compare` conditions and
`Get`, `Insert`, `Delete` and `Patch` operations (small dataclasses that build the requests) and
returns a TxnResult. Watches take `prev_kv=True` to get each key's value before the change as
`Event.prev_entry`.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import KW_ONLY, dataclass
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


class _Unset:
    """Marks an argument not given where None is a value (JSON null)."""

    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


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
    deletes come as plain deletes. `prev_entry` is the key just before the change, on a watch
    asked for with `prev_kv=True`; None if the key did not exist then (or was not asked for)."""

    type: str
    entry: Entry
    revision: int
    lease: int = 0
    cause: str | None = None
    prev_entry: Entry | None = None


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
                prev_kv = msg.event.prev_kv if msg.event.HasField("prev_kv") else None
                return Event(
                    event_type,
                    Entry.from_pb(msg.event.kv),
                    revision,
                    msg.event.lease,
                    _CAUSES.get(msg.event.cause),
                    None if prev_kv is None else Entry.from_pb(prev_kv),
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


_COMPARE_RESULTS = {
    "==": pb.COMPARE_RESULT_EQUAL,
    "!=": pb.COMPARE_RESULT_NOT_EQUAL,
    "<": pb.COMPARE_RESULT_LESS,
    ">": pb.COMPARE_RESULT_GREATER,
}
_COMPARE_TARGETS = ("mod_revision", "create_revision", "version", "value", "exists")


@dataclass(frozen=True)
class Compare:
    """One condition of a transaction (see `Client.txn`): the key's `target <result> given`, with
    `result` one of "==" (the default), "!=", "<", ">". `Compare("a", mod_revision=5)` holds when
    a's mod revision is 5; `Compare("a", "<", version=3)` when a was written fewer than 3 times
    since it was created. Exactly one target: `mod_revision`, `create_revision`, `version` (all 0
    for an absent key), `value` (the document, compared as JSON; an absent key equals none) or
    `exists`; `value` and `exists` take "==" and "!=" only."""

    key: str
    result: str = "=="
    _: KW_ONLY
    mod_revision: int | None = None
    create_revision: int | None = None
    version: int | None = None
    value: Any = _UNSET
    exists: bool | None = None

    def __post_init__(self) -> None:
        if self.result not in _COMPARE_RESULTS:
            raise ValueError(f"Compare result {self.result!r} is none of {list(_COMPARE_RESULTS)}")
        given = [name for name in _COMPARE_TARGETS if self._given(name)]
        if len(given) != 1:
            raise ValueError(f"Compare of {self.key!r} needs exactly one target, not {given}")

    def _given(self, name: str) -> bool:
        return getattr(self, name) is not (_UNSET if name == "value" else None)

    def to_pb(self) -> pb.Compare:
        compare = pb.Compare(key=self.key, result=_COMPARE_RESULTS[self.result])
        if self.value is not _UNSET:
            compare.value_json = to_json(self.value)
        else:
            (name,) = (name for name in _COMPARE_TARGETS if self._given(name))
            setattr(compare, name, getattr(self, name))
        return compare


@dataclass(frozen=True)
class Get:
    """Reads `key`, in a transaction. Its result is the Entry, or None if the key is absent."""

    key: str

    def to_pb(self) -> pb.GetRequest:
        return pb.GetRequest(key=self.key, value_encoding=_JSON)


@dataclass(frozen=True)
class Insert:
    """Stores `value` at `key`, as `Client.insert`. Its result is the InsertResponse."""

    key: str
    value: Any
    _: KW_ONLY
    expected_mod_revision: int | None = None
    lease: int = 0

    def to_pb(self) -> pb.InsertRequest:
        return pb.InsertRequest(
            key=self.key,
            value_json=to_json(self.value),
            expected_mod_revision=self.expected_mod_revision,
            lease=self.lease,
        )


@dataclass(frozen=True)
class Delete:
    """Deletes `key`, as `Client.delete`. Its result is the DeleteResponse."""

    key: str
    _: KW_ONLY
    expected_mod_revision: int | None = None
    allow_missing: bool = False

    def to_pb(self) -> pb.DeleteRequest:
        return pb.DeleteRequest(
            key=self.key,
            expected_mod_revision=self.expected_mod_revision,
            allow_missing=self.allow_missing,
        )


@dataclass(frozen=True)
class Patch:
    """Patches `key`'s document, as `Client.patch`: with `merge`, an RFC 7396 merge patch (any
    JSON, None included); with `json_patch`, an RFC 6902 JSON Patch (a list of operations such as
    `{"op": "add", "path": "/a", "value": 1}`). Exactly one of the two. Its result is the Entry
    after the patch."""

    key: str
    merge: Any = _UNSET
    _: KW_ONLY
    json_patch: list[dict[str, Any]] | None = None
    expected_mod_revision: int | None = None
    # None keeps the key's lease (a patch changes the document, not who owns it).
    lease: int | None = None

    def __post_init__(self) -> None:
        if (self.merge is _UNSET) == (self.json_patch is None):
            raise ValueError(f"Patch of {self.key!r} needs exactly one of merge and json_patch")

    def to_pb(self) -> pb.PatchRequest:
        request = pb.PatchRequest(
            key=self.key,
            expected_mod_revision=self.expected_mod_revision,
            lease=self.lease or 0,
            value_encoding=_JSON,
        )
        if self.json_patch is None:
            request.merge_json = to_json(self.merge)
        else:
            request.json_patch = to_json(self.json_patch)
        return request


# The Op field each operation goes in.
_OP_FIELDS = {Get: "get", Insert: "insert", Delete: "delete", Patch: "patch"}


def _op_pb(op: Get | Insert | Delete | Patch) -> pb.Op:
    kind = _OP_FIELDS.get(type(op))
    if kind is None:
        raise TypeError(f"a transaction operation is a Get, Insert, Delete or Patch, not {op!r}")
    return pb.Op(**{kind: op.to_pb()})


def _op_result(result: pb.OpResult) -> Any:
    """An operation's result as the Client method of its name returns it."""
    kind = result.WhichOneof("response")
    if kind == "get":
        return Entry.from_pb(result.get.kv) if result.get.HasField("kv") else None
    if kind == "patch":
        return Entry.from_pb(result.patch.kv)
    return getattr(result, kind)


@dataclass(frozen=True)
class TxnResult:
    """What `Client.txn` did: whether every comparison held (`success` ran; else `failure`),
    the revision of its writes (if none, the revision it read at), and one result per operation
    of the branch that ran, in order: an Entry or None for a Get, the InsertResponse or
    DeleteResponse, the Entry after a Patch."""

    succeeded: bool
    revision: int
    results: list[Any]


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
        response = self.stub.Get(Get(key).to_pb(), timeout=self.timeout)
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
        request = Insert(key, value, expected_mod_revision=expected_mod_revision, lease=lease)
        return self.stub.Insert(request.to_pb(), timeout=self.timeout)

    def delete(
        self,
        key: str,
        expected_mod_revision: int | None = None,
        allow_missing: bool = False,
    ) -> pb.DeleteResponse:
        request = Delete(
            key, expected_mod_revision=expected_mod_revision, allow_missing=allow_missing
        )
        return self.stub.Delete(request.to_pb(), timeout=self.timeout)

    def patch(
        self,
        key: str,
        merge: Any = _UNSET,
        *,
        json_patch: list[dict[str, Any]] | None = None,
        expected_mod_revision: int | None = None,
        lease: int | None = None,
    ) -> Entry:
        """Changes the key's document on the server, atomically, and returns the key after it
        (its `mod_revision` is the patch's revision). Give exactly one of:
        - `merge`: an RFC 7396 merge patch (`{"a": {"b": 1}, "c": None}` sets a.b, removes c); on
          an absent key it creates the key, applied to null.
        - `json_patch`: an RFC 6902 JSON Patch, a list of operations (add, remove, replace, move,
          copy, test) applied in order, all or none. NOT_FOUND on an absent key; a `test` that
          fails or a path that does not exist is FAILED_PRECONDITION (`error_info` reason
          PATCH_TEST_FAILED or PATCH_PATH_NOT_FOUND, with the `operation` index and `path`).
        With `expected_mod_revision`, only if the key's mod revision is that (else
        FAILED_PRECONDITION, REVISION_MISMATCH). `lease` attaches the key to that live lease;
        None keeps the lease it has. A malformed patch is INVALID_ARGUMENT. Nothing is changed
        on any error."""
        request = Patch(
            key,
            merge,
            json_patch=json_patch,
            expected_mod_revision=expected_mod_revision,
            lease=lease,
        )
        return Entry.from_pb(self.stub.Patch(request.to_pb(), timeout=self.timeout).kv)

    def merge(
        self,
        key: str,
        patch: Any,
        *,
        expected_mod_revision: int | None = None,
        lease: int | None = None,
    ) -> Entry:
        """`patch(key, patch, ...)`: merges `patch` into the key's document (RFC 7396)."""
        return self.patch(key, patch, expected_mod_revision=expected_mod_revision, lease=lease)

    def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[Get | Insert | Delete | Patch] = (),
        failure: Iterable[Get | Insert | Delete | Patch] = (),
    ) -> TxnResult:
        """If every comparison holds (none: always), runs `success`, otherwise `failure`; every
        write of the branch at one revision, all or nothing, and watchers see them together:

            result = client.txn(
                compare=[Compare("job", mod_revision=seen), Compare("lock", exists=False)],
                success=[Insert("job", {"state": "running"}), Patch("stats", {"runs": 3})],
                failure=[Get("job")],
            )
            if not result.succeeded:
                current = result.results[0]  # the Entry, or None if "job" is absent

        Operations run in order, and a Get sees the writes before it. Failing comparisons are not
        an error (`succeeded` is False); an operation that fails (a mismatched
        `expected_mod_revision`, a patch that does not apply, a Delete of an absent key without
        `allow_missing`) fails the call with its error and changes nothing. A branch writes each
        key at most once (INVALID_ARGUMENT otherwise)."""
        request = pb.TxnRequest(
            compare=[c.to_pb() for c in compare],
            success=[_op_pb(op) for op in success],
            failure=[_op_pb(op) for op in failure],
        )
        response = self.stub.Txn(request, timeout=self.timeout)
        return TxnResult(
            response.succeeded, response.revision, [_op_result(r) for r in response.results]
        )

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
        prev_kv: bool = False,
    ) -> Watch:
        """Watches one key; `timeout` (seconds, None for none) bounds the whole stream. To resume
        an earlier watch, pass its `resume_revision`, `store_id` and `resume_seen_keys` (as
        `seen_keys`): the watch then fails with FAILED_PRECONDITION (STORE_MISMATCH,
        STORE_BEHIND) where resuming would skip changes, and repeats none it saw. With
        `prev_kv`, each Event carries the key as it was before the change (`prev_entry`)."""
        request = pb.WatchKeyRequest(
            key=key,
            start_revision=start_revision,
            value_encoding=_JSON,
            store_id=store_id,
            prev_kv=prev_kv,
        )
        return Watch(self.stub.WatchKey(request, timeout=timeout), start_revision, seen_keys)

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
        prev_kv: bool = False,
    ) -> Watch:
        """Watches every key under `prefix`; the arguments are as in `watch_key`."""
        request = pb.WatchPrefixRequest(
            prefix=prefix,
            start_revision=start_revision,
            value_encoding=_JSON,
            store_id=store_id,
            prev_kv=prev_kv,
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
