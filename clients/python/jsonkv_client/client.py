"""The sync client: `Client` and what its calls hand out, `Watch` (an iterator that resumes
itself), `Lease` (kept alive from a thread) and `Lock`. Every call goes through `_call`, which
tries the servers in turn (see _servers.py) and raises JsonKvError subclasses (errors.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Self

import grpc

from ._entries import Entry, Event, Snapshot
from ._locking import is_gone, lock_key, predecessor
from ._pb import jsonkv_pb2 as pb
from ._pb import jsonkv_pb2_grpc as pb_grpc
from ._requests import (
    UNSET,
    Compare,
    Delete,
    Get,
    Insert,
    Op,
    Patch,
    TxnResult,
    WatchTarget,
    check_fields,
    check_filter,
    list_request,
    txn_request,
    txn_result,
)
from ._resume import WatchResume
from ._servers import (
    DEFAULT_TARGET,
    Attempts,
    Backoff,
    CallKind,
    PemSource,
    Servers,
    Settings,
    is_retryable,
)
from .errors import (
    DeadlineExceededError,
    JsonKvError,
    NotFoundError,
    from_rpc_error,
)

# Every unary call gets a deadline by default, so no call can hang for ever.
DEFAULT_TIMEOUT = 10.0
# The response header of every watch stream that names the store its revisions belong to.
STORE_ID_HEADER = "jsonkv-store-id"


class Client:
    """A connection to jsonkv servers. `addresses` is `host:port`, `http://host:port` or
    `https://host:port` (TLS), or several of them (a list, or separated by commas): the client
    uses one at a time and moves to the next when it cannot answer. `timeout` bounds every call
    in seconds (over all the servers it tries; None: no limit). `token` is sent as
    `authorization: Bearer TOKEN`. For https:// addresses, `ca` is the CA to trust instead of
    the system's roots, and `cert` and `key` the client certificate for mutual TLS; each is
    PEM bytes, or a str or path naming a PEM file. Errors are raised as JsonKvError
    subclasses; bad arguments as ValueError or TypeError. Nothing connects until the first
    call."""

    def __init__(
        self,
        addresses: str | Sequence[str] = DEFAULT_TARGET,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        token: str | None = None,
        ca: PemSource | None = None,
        cert: PemSource | None = None,
        key: PemSource | None = None,
    ) -> None:
        settings = Settings.make(addresses, token, ca, cert, key)
        self._servers: Servers[grpc.Channel] = Servers(
            settings, grpc.insecure_channel, grpc.secure_channel
        )
        self._metadata = settings.metadata
        self.timeout = timeout

    @property
    def stub(self) -> pb_grpc.JsonKvStub:
        """The generated stub of the server in use, for whatever the helpers leave out (pass
        `metadata` yourself if the server wants a token)."""
        return self._servers.stubs[self._servers.current]

    @property
    def address(self) -> str:
        """The address of the server in use."""
        return str(self._servers.addresses[self._servers.current])

    def close(self) -> None:
        for channel in self._servers.channels:
            channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, kind: CallKind, method: str, request: Any, timeout: float | None = UNSET
    ) -> Any:
        attempts = Attempts(self._servers, kind, self.timeout if timeout is UNSET else timeout)
        while True:
            index, left = attempts.next()
            rpc = getattr(self._servers.stubs[index], method)
            try:
                return rpc(request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as error:
                if not attempts.try_another(index, error):
                    raise from_rpc_error(error) from None

    def get(self, key: str) -> Entry:
        """The key's value and revisions; NotFoundError if it is absent."""
        response = self._call(CallKind.READ, "Get", Get(key).to_pb())
        return Entry.from_pb(response.kv)

    def insert(
        self,
        key: str,
        value: Any,
        expected_mod_revision: int | None = None,
        lease: int = 0,
    ) -> pb.InsertResponse:
        """Stores `value` (any JSON value: dicts, lists, str, int of any size, float, bool,
        None); with `expected_mod_revision`, only if the key's mod revision is that (0: only if
        absent; else FailedPreconditionError, REVISION_MISMATCH). `lease` attaches the key to
        that live lease (NotFoundError, and nothing written, if it is not live); 0 detaches it
        from any. Returns the response: its `revision` is the key's new mod revision."""
        request = Insert(key, value, expected_mod_revision=expected_mod_revision, lease=lease)
        return self._call(CallKind.WRITE, "Insert", request.to_pb())

    def insert_json(
        self,
        key: str,
        json: str,
        expected_mod_revision: int | None = None,
        lease: int = 0,
    ) -> pb.InsertResponse:
        """`insert` of JSON text, stored as written (InvalidArgumentError if it is not JSON)."""
        request = Insert(key, json=json, expected_mod_revision=expected_mod_revision, lease=lease)
        return self._call(CallKind.WRITE, "Insert", request.to_pb())

    def delete(
        self,
        key: str,
        expected_mod_revision: int | None = None,
        allow_missing: bool = False,
    ) -> pb.DeleteResponse:
        """Deletes the key (NotFoundError if absent, unless `allow_missing`); with
        `expected_mod_revision`, only if its mod revision is that."""
        request = Delete(
            key, expected_mod_revision=expected_mod_revision, allow_missing=allow_missing
        )
        return self._call(CallKind.WRITE, "Delete", request.to_pb())

    def patch(
        self,
        key: str,
        merge: Any = UNSET,
        *,
        merge_json: str | None = None,
        json_patch: list[dict[str, Any]] | None = None,
        expected_mod_revision: int | None = None,
        lease: int | None = None,
    ) -> Entry:
        """Changes the key's document on the server, atomically, and returns the key after it
        (its `mod_revision` is the patch's revision). Give exactly one of:
        - `merge`: an RFC 7396 merge patch (`{"a": {"b": 1}, "c": None}` sets a.b, removes c); on
          an absent key it creates the key, applied to null. `merge_json`: the same as JSON text.
        - `json_patch`: an RFC 6902 JSON Patch, a list of operations (add, remove, replace, move,
          copy, test) applied in order, all or none. NotFoundError on an absent key; a `test`
          that fails or a path that does not exist is FailedPreconditionError (reason
          PATCH_TEST_FAILED or PATCH_PATH_NOT_FOUND, with the `operation` index and `path`).
        With `expected_mod_revision`, only if the key's mod revision is that (else
        FailedPreconditionError, REVISION_MISMATCH). `lease` attaches the key to that live
        lease; None keeps the lease it has. A malformed patch is InvalidArgumentError. Nothing
        is changed on any error."""
        request = Patch(
            key,
            merge,
            merge_json=merge_json,
            json_patch=json_patch,
            expected_mod_revision=expected_mod_revision,
            lease=lease,
        )
        return Entry.from_pb(self._call(CallKind.WRITE, "Patch", request.to_pb()).kv)

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
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
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
        key at most once (InvalidArgumentError otherwise)."""
        request = txn_request(compare, success, failure)
        return txn_result(self._call(CallKind.WRITE, "Txn", request))

    def list(
        self,
        prefix: str = "",
        page_size: int = 0,
        min_revision: int = 0,
        filter: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> Iterator[Entry]:
        """Every key under `prefix` in key order, fetching a page at a time as it is iterated.
        With `min_revision`, each page is read once the server has applied that revision.

        A live query: with `filter`, a CEL expression over the document `value` and its `key`
        (`'value.status == "open" && value.total > 100'`), only the documents it matches; with
        `fields`, RFC 6901 JSON Pointers (`["/status", "/customer/name"]`), each value holds only
        those members, at their paths. A bad filter or pointer is InvalidArgumentError, its
        message naming where (`invalid filter: 1:10: ...`). A filtered page may hold few keys,
        or none: the listing goes on until the server says it is complete."""
        token = ""
        while True:
            request = list_request(prefix, page_size, token, min_revision, filter, fields)
            response = self._call(CallKind.READ, "List", request)
            yield from (Entry.from_pb(kv) for kv in response.kvs)
            token = response.next_page_token
            if not token:
                return

    def status(self) -> pb.StatusResponse:
        """The server's status: revision, keys, store_id, backend, version, and more."""
        return self._call(CallKind.READ, "Status", pb.StatusRequest())

    def watch_key(
        self,
        key: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
        prev_kv: bool = False,
    ) -> Watch:
        """Watches one key: a Snapshot, then an Event for every change, resuming by itself
        when its stream breaks (see Watch). `timeout` (seconds, None for none) bounds the whole
        watch. With `start_revision`, replays the changes from that revision instead of a
        snapshot; to resume an earlier watch, pass its `resume_revision`, `store_id` and
        `resume_seen_keys` (as `seen_keys`). With `prev_kv`, each Event carries the key as it
        was before the change (`prev_entry`)."""
        target = WatchTarget(key, prefix=False, prev_kv=prev_kv)
        return Watch(self, target, WatchResume(start_revision, store_id, seen_keys), timeout)

    def watch_prefix(
        self,
        prefix: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
        prev_kv: bool = False,
        filter: str | None = None,
        fields: Sequence[str] | None = None,
        diff: bool = False,
    ) -> Watch:
        """Watches every key under `prefix`; the arguments are as in `watch_key`.

        A live query: with `filter` (as in `list`) the watch is a view of the matching
        documents. The Snapshot holds only matches; a document that starts to match, or changes
        while it matches, comes as a put; one that stops matching, or is deleted while it
        matched, as a delete; a change to a document that matches neither before nor after
        sends nothing. Each Event's `view_change` says which: "entered", "updated" or "left".
        `fields` (as in `list`) applies to every value sent, `prev_entry` included. With
        `diff`, a put of a document that existed before carries `merge_patch`, the RFC 7396
        merge patch from its previous version. A resumed watch (by itself, or from
        `resume_revision`) is the same view: nothing missed or repeated. A bad filter or
        pointer fails the first `next()` with InvalidArgumentError."""
        target = WatchTarget(
            prefix,
            prefix=True,
            prev_kv=prev_kv,
            filter=check_filter(filter),
            fields=check_fields(fields),
            diff=diff,
        )
        return Watch(self, target, WatchResume(start_revision, store_id, seen_keys), timeout)

    def lease_grant(self, ttl_seconds: int, id: int | None = None) -> pb.LeaseGrantResponse:
        """Grants a lease of `ttl_seconds` (1 to 31536000, else InvalidArgumentError), with
        `id` if given (AlreadyExistsError if that lease is live), else one the server picks.
        Returns the response: its `id` and the `ttl_seconds` granted. Nothing keeps it alive:
        see `lease`."""
        request = pb.LeaseGrantRequest(ttl_seconds=ttl_seconds, id=id or 0)
        return self._call(CallKind.WRITE, "LeaseGrant", request)

    def lease_keep_alive(self, id: int, timeout: float | None = UNSET) -> int:
        """Restarts the lease's TTL, once; returns the TTL. NotFoundError if it is not live."""
        request = pb.LeaseKeepAliveRequest(id=id)
        return int(self._call(CallKind.READ, "LeaseKeepAlive", request, timeout).ttl_seconds)

    def lease_revoke(self, id: int) -> int:
        """Ends the lease now, deleting every key attached to it at one revision, which it
        returns. NotFoundError if it is not live."""
        request = pb.LeaseRevokeRequest(id=id)
        return int(self._call(CallKind.WRITE, "LeaseRevoke", request).revision)

    def lease_time_to_live(self, id: int, keys: bool = False) -> pb.LeaseTimeToLiveResponse:
        """The lease's `ttl_seconds` left (rounded up), its `granted_ttl_seconds` and, with
        `keys`, the `keys` attached to it in key order. NotFoundError if it is not live."""
        request = pb.LeaseTimeToLiveRequest(id=id, keys=keys)
        return self._call(CallKind.READ, "LeaseTimeToLive", request)

    def lease_list(self) -> list[int]:
        """The ids of every live lease, in order."""
        return list(self._call(CallKind.READ, "LeaseList", pb.LeaseListRequest()).ids)

    def lease(self, ttl_seconds: int, id: int | None = None) -> Lease:
        """Grants a lease (as `lease_grant`) and keeps it alive until the Lease is closed:
        `with client.lease(10) as lease: client.insert(key, value, lease=lease.id)`."""
        granted = self.lease_grant(ttl_seconds, id)
        return Lease(self, granted.id, granted.ttl_seconds)

    def lock(self, name: str, ttl: int = 60, timeout: float | None = None) -> Lock:
        """Waits until this client holds the lock `name`, then returns it: `with
        client.lock("jobs/nightly", ttl=10, timeout=30) as lock: ...`. Raises
        DeadlineExceededError (a TimeoutError) if `timeout` seconds (None: no limit) pass
        first.

        As etcd's concurrency.Mutex (see _locking.py): waiters get the lock in the order they
        asked and a release wakes only the next. A holder that dies without releasing holds
        the lock until its lease expires, `ttl` seconds at most. The Node client's locks are the
        same keys: the two interoperate."""
        deadline = None if timeout is None else time.monotonic() + timeout
        lease = self.lease(ttl)
        try:
            prefix, key = lock_key(name, lease.id)
            mine = self.insert(key, None, expected_mod_revision=0, lease=lease.id).create_revision
            while True:
                # Each page is read once the server has our key: none created before it hides.
                waiters = list(self.list(prefix, min_revision=mine))
                before = predecessor(waiters, prefix, key, mine, name)
                if before is None:
                    return Lock(name, key, lease, mine)
                self._wait_deleted(before, deadline, name)
        except BaseException:
            # The lease would expire anyway: the error that matters is the one that got us here.
            with contextlib.suppress(JsonKvError):
                lease.close()
            raise

    def _wait_deleted(self, entry: Entry, deadline: float | None, name: str) -> None:
        """Returns once `entry` (that incarnation of the key) is gone."""
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError(f"lock {name!r} not acquired in time")
        try:
            with self.watch_key(entry.key, timeout=timeout) as watch:
                for item in watch:
                    if is_gone(item, entry):
                        return
        except DeadlineExceededError as error:
            if deadline is not None:
                raise DeadlineExceededError(f"lock {name!r} not acquired in time") from error
            raise


def connect(
    addresses: str | Sequence[str] = DEFAULT_TARGET,
    *,
    timeout: float | None = DEFAULT_TIMEOUT,
    token: str | None = None,
    ca: PemSource | None = None,
    cert: PemSource | None = None,
    key: PemSource | None = None,
) -> Client:
    """A Client (see there for the arguments); use it in a `with` block to close it."""
    return Client(addresses, timeout=timeout, token=token, ca=ca, cert=cert, key=key)


class Watch:
    """Iterates one watch: a Snapshot (unless started from a revision), then Events, for as
    long as it runs. A snapshot sent in several messages comes out as one Snapshot.

    When the stream breaks (the server went away, restarted or shut down; the connection
    broke), the watch opens it again by itself, on the next server if there are several, after
    a short backoff, from the revision after the last it delivered and naming the store those
    revisions belong to: nothing is missed or repeated. A live query's filter, fields and diff
    are asked for again, so the view goes on as it was. A server that cannot resume it that way
    ends it with an error: FailedPreconditionError (STORE_MISMATCH, STORE_BEHIND: another
    store, or one that lost changes) or OutOfRangeError (history no longer reaches back); start
    a new watch from a snapshot then. The watch's `timeout` ends it with DeadlineExceededError.

    To resume in a later process, keep `resume_revision`, `store_id` and `resume_seen_keys`
    and pass them to `watch_key`/`watch_prefix` (with the same filter, fields and diff, for the
    same view). `cancel()` (or leaving a `with` block) ends the iteration.
    """

    def __init__(
        self, client: Client, target: WatchTarget, resume: WatchResume, timeout: float | None
    ) -> None:
        self._client = client
        self._target = target
        self._resume = resume
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._backoff = Backoff()
        self._cancelled = False
        self._call: Any = None
        self._server = 0
        self._store_known = False
        self._open()

    @property
    def resume_revision(self) -> int:
        """The `start_revision` that resumes this watch after everything it delivered."""
        return self._resume.start_revision

    @property
    def resume_seen_keys(self) -> frozenset[str]:
        """The keys already delivered of `resume_revision`, a change of several keys that the
        watch stopped in the middle of; empty otherwise. Resume with them as `seen_keys`."""
        return self._resume.seen_keys

    @property
    def store_id(self) -> str:
        """The store this watch's revisions belong to (the `jsonkv-store-id` header of its
        stream): resume with it next to `resume_revision`. Waits for the stream's headers."""
        if not self._resume.store_id and self._call is not None:
            with contextlib.suppress(grpc.RpcError):
                self._learn_store()
        return self._resume.store_id

    def _open(self) -> None:
        left = None if self._deadline is None else self._deadline - time.monotonic()
        if left is not None and left <= 0:
            raise DeadlineExceededError("the watch's timeout ran out")
        servers = self._client._servers
        self._server = servers.current
        request = self._target.request(self._resume.start_revision, self._resume.request_store_id)
        rpc = getattr(servers.stubs[self._server], self._target.method)
        self._call = rpc(request, timeout=left, metadata=self._client._metadata)
        self._store_known = False

    def _learn_store(self) -> None:
        if not self._store_known:
            headers = dict(self._call.initial_metadata() or ())
            self._resume.opened(str(headers.get(STORE_ID_HEADER, "")))
            self._store_known = True

    def __iter__(self) -> Iterator[Snapshot | Event]:
        return self

    def __next__(self) -> Snapshot | Event:
        while not self._cancelled:
            try:
                for message in self._call:
                    self._learn_store()
                    self._backoff.reset()
                    item = self._resume.receive(message)
                    if item is not None:
                        return item
                failure: grpc.RpcError | None = None  # ended without an error: open it again
            except grpc.RpcError as error:
                failure = error
            if self._cancelled:
                break
            self._resume.disconnected()
            if failure is not None and not is_retryable(failure):
                raise from_rpc_error(failure) from None
            if failure is not None and self._out_of_time(failure):
                raise from_rpc_error(failure) from None
            self._client._servers.move_past(self._server)
            delay = self._backoff.next_delay()
            if self._deadline is not None:
                delay = min(delay, max(0.0, self._deadline - time.monotonic()))
            time.sleep(delay)
            self._open()
        raise StopIteration

    def _out_of_time(self, failure: grpc.RpcError) -> bool:
        """Whether `failure` is the watch's own timeout running out, which ends it."""
        code = failure.code()  # type: ignore[attr-defined]
        return (
            code == grpc.StatusCode.DEADLINE_EXCEEDED
            and self._deadline is not None
            and time.monotonic() >= self._deadline - 0.01
        )

    def cancel(self) -> None:
        """Ends the watch: iterating it stops."""
        self._cancelled = True
        if self._call is not None:
            self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


class Lease:
    """A granted lease that a background thread keeps alive, calling LeaseKeepAlive every third
    of its TTL, until `close()` (or leaving a `with` block) stops the thread and revokes it,
    deleting the keys attached to it. Get one from `Client.lease`.

    A keep-alive that fails for a passing reason (a server down, a deadline) is tried again at
    the next third. One answered NOT_FOUND means the lease is gone (it expired before a
    keep-alive got through, or was revoked elsewhere), and so are its keys: `lost` turns True,
    the thread stops, and `close()` has nothing left to revoke.
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
            timeout = self._client.timeout
            try:
                # A keep-alive that hangs must not hold up the next one.
                self._client.lease_keep_alive(
                    self.id, period if timeout is None else min(timeout, period)
                )
            except NotFoundError:
                self._lost.set()
                return
            except JsonKvError:
                pass  # a passing failure: try again at the next third
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
            with contextlib.suppress(NotFoundError):
                self._client.lease_revoke(self.id)

    def __enter__(self) -> Self:
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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
