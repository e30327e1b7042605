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
    asked for with `prev_kv=True`; None if the key did not exist then (or was not asked for).

    On a filtered watch (a live query), `view_change` says how the event changes the view of
    matching documents: "entered" (a put: the document matches now and did not before),
    "updated" (a put: it matched before and still does) or "left" (a delete: it was deleted, or
    changed so that it no longer matches; `entry` holds only the key and `mod_revision`). It is
    None on an unfiltered watch. On a watch asked for with `diff=True`, `merge_patch` is the RFC
    7396 merge patch from the document's previous version to this one (projected to the watch's
    `fields`), and `merge_patch_json` its exact JSON text; both None when the event has none: a
    delete, a document that did not exist before, or a change a merge patch cannot express
    (setting a member to null)."""

    type: str
    entry: Entry
    revision: int
    lease: int = 0
    cause: str | None = None
    prev_entry: Entry | None = None
    view_change: str | None = None
    merge_patch: Any = None
    merge_patch_json: str | None = field(default=None, compare=False, repr=False)


_EVENT_TYPES = {pb.Event.EVENT_TYPE_PUT: "put", pb.Event.EVENT_TYPE_DELETE: "delete"}
_CAUSES = {pb.Event.CAUSE_EXPIRED: "expired", pb.Event.CAUSE_REVOKED: "revoked"}
_VIEW_CHANGES = {
    pb.VIEW_CHANGE_ENTERED: "entered",
    pb.VIEW_CHANGE_UPDATED: "updated",
    pb.VIEW_CHANGE_LEFT: "left",
}


def event_from_pb(event: pb.Event) -> Event:
    prev = Entry.from_pb(event.prev_kv) if event.HasField("prev_kv") else None
    # Asked for as VALUE_ENCODING_JSON, the patch comes as text; "" is no patch.
    patch_json = event.merge_patch_json or None
    return Event(
        _EVENT_TYPES.get(event.type, "unspecified"),
        Entry.from_pb(event.kv),
        event.revision,
        event.lease,
        _CAUSES.get(event.cause),
        prev,
        _VIEW_CHANGES.get(event.view_change),
        from_json(patch_json or ""),
        patch_json,
    )
