"""The asyncio client on grpc.aio: `AsyncClient`, with the sync Client's calls as coroutines,
`AsyncWatch` (an async iterator that resumes itself), `AsyncLease` (kept alive from a task) and
`AsyncLock`. Requests, results, errors, failover and the resume rule are the sync client's own
(_requests.py, _entries.py, errors.py, _servers.py, _resume.py); only the waiting differs.

    async with jsonkv_client.aio.connect("127.0.0.1:50051") as kv:
        await kv.insert("greeting", {"hello": "world"})
        async with kv.watch_key("greeting") as watch:
            async for item in watch: ...
        async with kv.lock("nightly", ttl=10) as lock: ...

Make an AsyncClient inside a running event loop (in a coroutine): its channels belong to it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable, Sequence
from typing import Any, Generic, Self, TypeVar

import grpc
import grpc.aio

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
from .client import DEFAULT_TIMEOUT, STORE_ID_HEADER
from .errors import DeadlineExceededError, JsonKvError, NotFoundError, from_rpc_error

T = TypeVar("T", bound="_AsyncClosable")


class _AsyncClosable:
    async def close(self) -> None:
        raise NotImplementedError


class Acquiring(Generic[T]):
    """What `AsyncClient.lease` and `AsyncClient.lock` return: await it for the lease or lock,
    or use it in `async with` to have it closed (released) when the block ends."""

    def __init__(self, acquire: Callable[[], Awaitable[T]]):
        self._acquire = acquire
        self._held: T | None = None

    def __await__(self) -> Generator[Any, None, T]:
        return self._acquire().__await__()

    async def __aenter__(self) -> T:
        self._held = await self._acquire()
        return self._held

    async def __aexit__(self, *exc: object) -> None:
        if self._held is not None:
            await self._held.close()


class AsyncClient:
    """The asyncio twin of jsonkv_client.Client: the same arguments (addresses, timeout,
    token, ca, cert, key), the same calls as coroutines, the same errors."""

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
        self._servers: Servers[grpc.aio.Channel] = Servers(
            settings, grpc.aio.insecure_channel, grpc.aio.secure_channel
        )
        self._metadata = settings.metadata
        self.timeout = timeout

    @property
    def stub(self) -> pb_grpc.JsonKvStub:
        """The generated stub (on a grpc.aio channel) of the server in use."""
        return self._servers.stubs[self._servers.current]

    @property
    def address(self) -> str:
        """The address of the server in use."""
        return str(self._servers.addresses[self._servers.current])

    async def close(self) -> None:
        for channel in self._servers.channels:
            await channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(
        self, kind: CallKind, method: str, request: Any, timeout: float | None = UNSET
    ) -> Any:
        attempts = Attempts(self._servers, kind, self.timeout if timeout is UNSET else timeout)
        while True:
            index, left = attempts.next()
            rpc = getattr(self._servers.stubs[index], method)
            try:
                return await rpc(request, timeout=left, metadata=self._metadata)
            except grpc.RpcError as error:
                if not attempts.try_another(index, error):
                    raise from_rpc_error(error) from None

    async def get(self, key: str) -> Entry:
        """As Client.get."""
        response = await self._call(CallKind.READ, "Get", Get(key).to_pb())
        return Entry.from_pb(response.kv)

    async def insert(
        self,
        key: str,
        value: Any,
        expected_mod_revision: int | None = None,
        lease: int = 0,
    ) -> pb.InsertResponse:
        """As Client.insert."""
        request = Insert(key, value, expected_mod_revision=expected_mod_revision, lease=lease)
        return await self._call(CallKind.WRITE, "Insert", request.to_pb())

    async def insert_json(
        self,
        key: str,
        json: str,
        expected_mod_revision: int | None = None,
        lease: int = 0,
    ) -> pb.InsertResponse:
        """As Client.insert_json."""
        request = Insert(key, json=json, expected_mod_revision=expected_mod_revision, lease=lease)
        return await self._call(CallKind.WRITE, "Insert", request.to_pb())

    async def delete(
        self,
        key: str,
        expected_mod_revision: int | None = None,
        allow_missing: bool = False,
    ) -> pb.DeleteResponse:
        """As Client.delete."""
        request = Delete(
            key, expected_mod_revision=expected_mod_revision, allow_missing=allow_missing
        )
        return await self._call(CallKind.WRITE, "Delete", request.to_pb())

    async def patch(
        self,
        key: str,
        merge: Any = UNSET,
        *,
        merge_json: str | None = None,
        json_patch: list[dict[str, Any]] | None = None,
        expected_mod_revision: int | None = None,
        lease: int | None = None,
    ) -> Entry:
        """As Client.patch."""
        request = Patch(
            key,
            merge,
            merge_json=merge_json,
            json_patch=json_patch,
            expected_mod_revision=expected_mod_revision,
            lease=lease,
        )
        return Entry.from_pb((await self._call(CallKind.WRITE, "Patch", request.to_pb())).kv)

    async def merge(
        self,
        key: str,
        patch: Any,
        *,
        expected_mod_revision: int | None = None,
        lease: int | None = None,
    ) -> Entry:
        """As Client.merge."""
        return await self.patch(
            key, patch, expected_mod_revision=expected_mod_revision, lease=lease
        )

    async def txn(
        self,
        compare: Iterable[Compare] = (),
        success: Iterable[Op] = (),
        failure: Iterable[Op] = (),
    ) -> TxnResult:
        """As Client.txn."""
        request = txn_request(compare, success, failure)
        return txn_result(await self._call(CallKind.WRITE, "Txn", request))

    async def list(
        self,
        prefix: str = "",
        page_size: int = 0,
        min_revision: int = 0,
        filter: str | None = None,
        fields: Sequence[str] | None = None,
    ) -> AsyncIterator[Entry]:
        """As Client.list: `async for entry in kv.list(prefix, filter='value.open')`."""
        token = ""
        while True:
            request = list_request(prefix, page_size, token, min_revision, filter, fields)
            response = await self._call(CallKind.READ, "List", request)
            for kv in response.kvs:
                yield Entry.from_pb(kv)
            token = response.next_page_token
            if not token:
                return

    async def status(self) -> pb.StatusResponse:
        """As Client.status."""
        return await self._call(CallKind.READ, "Status", pb.StatusRequest())

    def watch_key(
        self,
        key: str,
        start_revision: int = 0,
        timeout: float | None = None,
        store_id: str = "",
        seen_keys: Iterable[str] = (),
        prev_kv: bool = False,
    ) -> AsyncWatch:
        """As Client.watch_key: `async with kv.watch_key(key) as watch: async for item in
        watch: ...`."""
        target = WatchTarget(key, prefix=False, prev_kv=prev_kv)
        return AsyncWatch(self, target, WatchResume(start_revision, store_id, seen_keys), timeout)

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
    ) -> AsyncWatch:
        """As Client.watch_prefix, live queries (`filter`, `fields`, `diff`) included."""
        target = WatchTarget(
            prefix,
            prefix=True,
            prev_kv=prev_kv,
            filter=check_filter(filter),
            fields=check_fields(fields),
            diff=diff,
        )
        return AsyncWatch(self, target, WatchResume(start_revision, store_id, seen_keys), timeout)

    async def lease_grant(self, ttl_seconds: int, id: int | None = None) -> pb.LeaseGrantResponse:
        """As Client.lease_grant."""
        request = pb.LeaseGrantRequest(ttl_seconds=ttl_seconds, id=id or 0)
        return await self._call(CallKind.WRITE, "LeaseGrant", request)

    async def lease_keep_alive(self, id: int, timeout: float | None = UNSET) -> int:
        """As Client.lease_keep_alive."""
        request = pb.LeaseKeepAliveRequest(id=id)
        response = await self._call(CallKind.READ, "LeaseKeepAlive", request, timeout)
        return int(response.ttl_seconds)

    async def lease_revoke(self, id: int) -> int:
        """As Client.lease_revoke."""
        request = pb.LeaseRevokeRequest(id=id)
        return int((await self._call(CallKind.WRITE, "LeaseRevoke", request)).revision)

    async def lease_time_to_live(self, id: int, keys: bool = False) -> pb.LeaseTimeToLiveResponse:
        """As Client.lease_time_to_live."""
        request = pb.LeaseTimeToLiveRequest(id=id, keys=keys)
        return await self._call(CallKind.READ, "LeaseTimeToLive", request)

    async def lease_list(self) -> list[int]:
        """As Client.lease_list."""
        return list((await self._call(CallKind.READ, "LeaseList", pb.LeaseListRequest())).ids)

    def lease(self, ttl_seconds: int, id: int | None = None) -> Acquiring[AsyncLease]:
        """Grants a lease and keeps it alive from a task until it is closed: `async with
        kv.lease(10) as lease: ...`, or `lease = await kv.lease(10)` then `await
        lease.close()`."""

        async def acquire() -> AsyncLease:
            granted = await self.lease_grant(ttl_seconds, id)
            return AsyncLease(self, granted.id, granted.ttl_seconds)

        return Acquiring(acquire)

    def lock(self, name: str, ttl: int = 60, timeout: float | None = None) -> Acquiring[AsyncLock]:
        """As Client.lock: `async with kv.lock("jobs/nightly", ttl=10, timeout=30) as lock:
        ...`, or `lock = await kv.lock(...)` then `await lock.release()`."""
        return Acquiring(lambda: self._lock(name, ttl, timeout))

    async def _lock(self, name: str, ttl: int, timeout: float | None) -> AsyncLock:
        deadline = None if timeout is None else time.monotonic() + timeout
        lease = await self.lease(ttl)
        try:
            prefix, key = lock_key(name, lease.id)
            inserted = await self.insert(key, None, expected_mod_revision=0, lease=lease.id)
            mine = inserted.create_revision
            while True:
                # Each page is read once the server has our key: none created before it hides.
                waiters = [e async for e in self.list(prefix, min_revision=mine)]
                before = predecessor(waiters, prefix, key, mine, name)
                if before is None:
                    return AsyncLock(name, key, lease, mine)
                await self._wait_deleted(before, deadline, name)
        except BaseException:
            # The lease would expire anyway: the error that matters is the one that got us here.
            with contextlib.suppress(JsonKvError):
                await lease.close()
            raise

    async def _wait_deleted(self, entry: Entry, deadline: float | None, name: str) -> None:
        timeout = None if deadline is None else deadline - time.monotonic()
        if timeout is not None and timeout <= 0:
            raise DeadlineExceededError(f"lock {name!r} not acquired in time")
        try:
            async with self.watch_key(entry.key, timeout=timeout) as watch:
                async for item in watch:
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
) -> AsyncClient:
    """An AsyncClient; use it in an `async with` block to close it."""
    return AsyncClient(addresses, timeout=timeout, token=token, ca=ca, cert=cert, key=key)


class AsyncWatch:
    """The asyncio twin of jsonkv_client.Watch: `async for item in watch` yields a Snapshot
    (unless started from a revision), then Events, resuming by itself as Watch does."""

    def __init__(
        self,
        client: AsyncClient,
        target: WatchTarget,
        resume: WatchResume,
        timeout: float | None,
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
        return self._resume.start_revision

    @property
    def resume_seen_keys(self) -> frozenset[str]:
        return self._resume.seen_keys

    @property
    def store_id(self) -> str:
        """The store of this watch's revisions, once its stream has sent something ("" until
        then; `await watch.wait_store_id()` waits for the headers)."""
        return self._resume.store_id

    async def wait_store_id(self) -> str:
        """Waits for the stream's headers, then returns `store_id`."""
        if not self._resume.store_id:
            with contextlib.suppress(grpc.RpcError):
                await self._learn_store()
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

    async def _learn_store(self) -> None:
        if not self._store_known:
            headers = await self._call.initial_metadata()
            self._resume.opened(str(dict(headers or ()).get(STORE_ID_HEADER, "")))
            self._store_known = True

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Snapshot | Event:
        while not self._cancelled:
            failure: grpc.RpcError | None = None
            try:
                while True:
                    message = await self._call.read()
                    if message is grpc.aio.EOF:
                        break  # ended without an error: open it again
                    await self._learn_store()
                    self._backoff.reset()
                    item = self._resume.receive(message)
                    if item is not None:
                        return item
            except grpc.RpcError as error:
                failure = error
            except asyncio.CancelledError:
                if self._cancelled:
                    break
                raise
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
            await asyncio.sleep(delay)
            self._open()
        raise StopAsyncIteration

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

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()


class AsyncLease(_AsyncClosable):
    """The asyncio twin of jsonkv_client.Lease: a task calls LeaseKeepAlive every third of the
    TTL until `await close()` stops it and revokes the lease. `lost` turns True (and
    `wait_lost` returns) once a keep-alive finds the lease gone."""

    def __init__(self, client: AsyncClient, id: int, ttl_seconds: int):
        self.id = id
        self.ttl_seconds = ttl_seconds
        self._client = client
        self._lost = asyncio.Event()
        self._closed = False
        self._task = asyncio.get_running_loop().create_task(
            self._keep_alive(), name=f"jsonkv-lease-{id:x}"
        )

    @property
    def lost(self) -> bool:
        return self._lost.is_set()

    async def wait_lost(self, timeout: float | None = None) -> bool:
        """Waits up to `timeout` seconds (None: for ever) for the lease to be lost; `lost`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lost.wait(), timeout)
        return self.lost

    async def _keep_alive(self) -> None:
        period = self.ttl_seconds / 3
        next_at = time.monotonic() + period
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = time.monotonic() + period
            timeout = self._client.timeout
            try:
                # A keep-alive that hangs must not hold up the next one.
                await self._client.lease_keep_alive(
                    self.id, period if timeout is None else min(timeout, period)
                )
            except NotFoundError:
                self._lost.set()
                return
            except JsonKvError:
                pass  # a passing failure: try again at the next third

    async def close(self) -> None:
        """Stops the keep-alives and revokes the lease (unless it was lost). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        if not self.lost:
            with contextlib.suppress(NotFoundError):
                await self._client.lease_revoke(self.id)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class AsyncLock(_AsyncClosable):
    """The asyncio twin of jsonkv_client.Lock: held while its lease lives; `await release()`
    (or `close()`, or leaving `async with`) revokes it and hands the lock on."""

    def __init__(self, name: str, key: str, lease: AsyncLease, create_revision: int):
        self.name = name
        self.key = key
        self.lease = lease
        self.create_revision = create_revision

    @property
    def lost(self) -> bool:
        return self.lease.lost

    async def release(self) -> None:
        await self.lease.close()

    async def close(self) -> None:
        await self.release()
