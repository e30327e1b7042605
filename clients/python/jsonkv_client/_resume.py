"""Where a watch stands, so that it can be resumed with nothing missed and nothing repeated:
the state both the sync and the asyncio watch feed every message through.

The resume rule (the Rust client's, see docs/clients.md): the *watermark* is the highest
revision up to which the caller has everything, the maximum of the snapshot's revision, the
last event's and the last progress notice's. A broken stream is opened again with
`start_revision = watermark + 1` and the store those revisions belong to, so the server replays
from there and refuses (FAILED_PRECONDITION) if it serves another store. A change of several
keys at one revision comes as events marked `more_at_revision` but the last: while one is only
partly delivered, the resume starts at that revision and skips the keys already delivered. Until
the snapshot is complete there is no watermark, and a resume asks for a snapshot again."""

from __future__ import annotations

from collections.abc import Iterable

from ._entries import Entry, Event, Snapshot, event_from_pb
from ._pb import jsonkv_pb2 as pb
from .errors import ProtocolError


class WatchResume:
    """Takes every message of a watch's streams, and says what to deliver and where to resume.
    Start at `start_revision` (0: with a snapshot), of the store `store_id` names (if known),
    skipping the events of `start_revision` whose keys are in `seen_keys`."""

    def __init__(self, start_revision: int = 0, store_id: str = "", seen_keys: Iterable[str] = ()):
        if start_revision < 0:
            raise ValueError(f"start_revision is 0 (a snapshot) or more, not {start_revision}")
        self._watermark: int | None = start_revision - 1 if start_revision > 0 else None
        seen = frozenset(seen_keys)
        # A revision after the watermark partly delivered, and the keys delivered at it.
        self._partial: tuple[int, frozenset[str]] | None = (
            (start_revision, seen) if seen and start_revision > 0 else None
        )
        self._snapshot_parts: tuple[int, list[Entry]] | None = None
        self.store_id = store_id

    @property
    def start_revision(self) -> int:
        """The `start_revision` that resumes after everything delivered (0: a snapshot)."""
        if self._partial is not None:
            return self._partial[0]
        return 0 if self._watermark is None else self._watermark + 1

    @property
    def seen_keys(self) -> frozenset[str]:
        """The keys already delivered of the revision `start_revision` names, if it was cut
        short; empty otherwise."""
        return frozenset() if self._partial is None else self._partial[1]

    @property
    def request_store_id(self) -> str:
        """The `store_id` to send: the store of the revisions resumed from. None is needed
        while a snapshot is awaited: any store can give one."""
        return "" if self._watermark is None else self.store_id

    def opened(self, store_id: str) -> None:
        """A stream opened on a server of `store_id` ("": one too old to say). Before the
        snapshot the stream's store becomes the watch's; after it, the server accepted the one
        sent, so another store is a broken contract."""
        if not store_id:
            return
        if self._watermark is not None and self.store_id and store_id != self.store_id:
            raise ProtocolError(
                f"resumed a watch of store {self.store_id} on a server of store {store_id}"
            )
        self.store_id = store_id

    def disconnected(self) -> None:
        """The stream broke: a snapshot cut short must be read again whole."""
        self._snapshot_parts = None

    def receive(self, message: pb.WatchResponse) -> Snapshot | Event | None:
        """What the caller should see of `message`, if anything."""
        kind = message.WhichOneof("response")
        if kind == "snapshot":
            return self._snapshot(message.snapshot)
        if kind == "event":
            return self._event(message.event)
        if kind == "progress":
            # Before the snapshot is complete a progress notice promises nothing kept here.
            if self._watermark is not None:
                self._watermark = max(self._watermark, message.progress.revision)
                if self._partial is not None and self._partial[0] <= self._watermark:
                    self._partial = None
            return None
        raise ProtocolError("empty watch message")

    def _snapshot(self, snapshot: pb.Snapshot) -> Snapshot | None:
        if self._watermark is not None:
            raise ProtocolError(
                f"unexpected snapshot at revision {snapshot.revision} on a resumed watch"
            )
        entries: list[Entry] = []
        if self._snapshot_parts is not None:
            revision, entries = self._snapshot_parts
            if revision != snapshot.revision:
                raise ProtocolError(
                    f"snapshot messages at revisions {revision} and {snapshot.revision}"
                )
        entries.extend(Entry.from_pb(kv) for kv in snapshot.kvs)
        if not snapshot.last:
            self._snapshot_parts = (snapshot.revision, entries)
            return None
        self._snapshot_parts = None
        self._watermark = snapshot.revision
        return Snapshot(snapshot.revision, entries)

    def _event(self, event: pb.Event) -> Event | None:
        if self._watermark is None:
            raise ProtocolError(f"event at revision {event.revision} before the snapshot ended")
        if event.revision <= self._watermark:
            return None  # delivered before a reconnect, or covered by a progress notice
        key = event.kv.key
        if self._partial is not None:
            revision, seen = self._partial
            if revision == event.revision and key in seen:
                return None  # part of a revision delivered before a reconnect
        if event.type not in (pb.Event.EVENT_TYPE_PUT, pb.Event.EVENT_TYPE_DELETE):
            raise ProtocolError(f"event at revision {event.revision} of type {event.type}")
        if event.more_at_revision:
            # Everything before this revision is complete; this one is not yet.
            self._watermark = max(self._watermark, event.revision - 1)
            if self._partial is not None and self._partial[0] == event.revision:
                self._partial = (event.revision, self._partial[1] | {key})
            else:
                self._partial = (event.revision, frozenset({key}))
        else:
            self._watermark = event.revision
            self._partial = None
        return event_from_pb(event)
