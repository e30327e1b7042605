"""What the server sends back, as Python values: Entry (a key and its JSON value), Snapshot and
Event (what a watch yields), and the JSON text conversion both directions use."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ._pb import jsonkv_pb2 as pb


def to_json(value: Any) -> str:
    """Compact JSON text; NaN and infinities are not JSON, so they are refused here."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def from_json(text: str) -> Any:
    """The value of JSON text the server sent; integers of any size stay exact."""
    return json.loads(text) if text else None


@dataclass(frozen=True)
class Entry:
    """A stored key: its value and revision metadata. `value` is None for a deleted key.
    `lease` is the lease the key is attached to, 0 if none. `json` is the value's exact JSON
    text as stored (every digit of a number, even one a float would round)."""

    key: str
    value: Any
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0
    json: str = field(default="", compare=False, repr=False)

    @classmethod
    def from_pb(cls, kv: pb.KeyValue) -> Entry:
        return cls(
            kv.key,
            from_json(kv.value_json),
            kv.create_revision,
            kv.mod_revision,
            kv.version,
            kv.lease,
            kv.value_json,
        )


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


def event_from_pb(event: pb.Event) -> Event:
    prev = Entry.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
    return Event(
        _EVENT_TYPES.get(event.type, "unspecified"),
        Entry.from_pb(event.kv),
        event.revision,
        event.lease,
        _CAUSES.get(event.cause),
        prev,
    )
