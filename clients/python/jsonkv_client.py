"""A thin Python client for jsonkv (service jsonkv.v1.JsonKv over gRPC).

Values travel as JSON text (`value_json`, responses asked for with VALUE_ENCODING_JSON), the
contract's lossless path: Python's json module keeps integers of any size exactly. The stubs come
from gen/, which `python gen_stubs.py` writes from the proto.
"""

from __future__ import annotations

import json
import sys
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
    """A stored key: its value and revision metadata. `value` is None for a deleted key."""

    key: str
    value: Any
    create_revision: int
    mod_revision: int
    version: int

    @classmethod
    def from_pb(cls, kv: pb.KeyValue) -> Entry:
        value = json.loads(kv.value_json) if kv.value_json else None
        return cls(kv.key, value, kv.create_revision, kv.mod_revision, kv.version)


@dataclass(frozen=True)
class Snapshot:
    """The watched keys at `revision`; every later change follows as an Event."""

    revision: int
    entries: list[Entry]


@dataclass(frozen=True)
class Event:
    """One change: `type` is "put" or "delete"."""

    type: str
    entry: Entry
    revision: int


_EVENT_TYPES = {pb.Event.EVENT_TYPE_PUT: "put", pb.Event.EVENT_TYPE_DELETE: "delete"}


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
                return Event(event_type, Entry.from_pb(msg.event.kv), revision)
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
        self, key: str, value: Any, expected_mod_revision: int | None = None
    ) -> pb.InsertResponse:
        """Stores `value`; with `expected_mod_revision`, only if the key's mod revision is that
        (0: only if absent). Returns the response: its `revision` is the key's new mod revision."""
        request = pb.InsertRequest(
            key=key, value_json=to_json(value), expected_mod_revision=expected_mod_revision
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

    def list(self, prefix: str = "", page_size: int = 0) -> Iterator[Entry]:
        """Every key under `prefix` in key order, fetching a page at a time."""
        token = ""
        while True:
            response = self.stub.List(
                pb.ListRequest(
                    prefix=prefix, page_size=page_size, page_token=token, value_encoding=_JSON
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
