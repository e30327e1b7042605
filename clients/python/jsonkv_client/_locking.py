"""The lock recipe's decisions, shared by the sync and the asyncio `lock`: as etcd's
concurrency.Mutex, a lease owns the key `<name>/<lease id in hex>`; the holder is the key under
`<name>/` with the lowest create revision, and every other waiter watches the key created just
before its own until that is deleted, then looks again. Keys of another lock named under
`<name>/` (a deeper path) do not count."""

from __future__ import annotations

from ._entries import Entry, Event, Snapshot


def lock_key(name: str, lease_id: int) -> tuple[str, str]:
    """The prefix of the lock's waiters, and the key of the waiter holding lease `lease_id`."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a lock name is a non-empty string, not {name!r}")
    prefix = f"{name}/"
    return prefix, f"{prefix}{lease_id:x}"


def predecessor(entries: list[Entry], prefix: str, key: str, mine: int, name: str) -> Entry | None:
    """The waiter just before ours (`key`, created at revision `mine`) among the keys listed
    under `prefix`, or None when ours is first: we hold the lock."""
    waiters = [e for e in entries if "/" not in e.key[len(prefix) :]]
    if not any(e.key == key for e in waiters):
        raise RuntimeError(f"lock {name!r}: {key} was deleted while waiting")
    before = [e for e in waiters if e.create_revision < mine]
    if not before:
        return None
    return max(before, key=lambda e: e.create_revision)


def is_gone(item: Snapshot | Event, entry: Entry) -> bool:
    """Whether a watch item of `entry`'s key shows that incarnation of it gone."""
    if isinstance(item, Snapshot):
        return [e.create_revision for e in item.entries] != [entry.create_revision]
    return item.type == "delete"
