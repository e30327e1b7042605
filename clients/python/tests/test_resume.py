"""The resume rule on scripted messages, as a broken and reopened stream would bring them: what
a watch delivers, and where it asks to resume. The Rust client's reconnect tests, for the state
the sync and asyncio watches share."""

import pytest

from jsonkv_client import Event, ProtocolError, Snapshot, pb
from jsonkv_client._resume import WatchResume


def kv(key, revision):
    return pb.KeyValue(key=key, value_json=str(revision), mod_revision=revision)


def snapshot(revision, keys, last=True):
    return pb.WatchResponse(
        snapshot=pb.Snapshot(revision=revision, kvs=[kv(k, revision) for k in keys], last=last)
    )


def put(key, revision, more=False):
    return pb.WatchResponse(
        event=pb.Event(
            type=pb.Event.EVENT_TYPE_PUT,
            kv=kv(key, revision),
            revision=revision,
            more_at_revision=more,
        )
    )


def progress(revision):
    return pb.WatchResponse(progress=pb.Progress(revision=revision))


def feed(resume, messages):
    """What the caller sees of `messages`, as (kind, key or None, revision)."""
    seen = []
    for message in messages:
        item = resume.receive(message)
        if isinstance(item, Snapshot):
            seen.append(("snapshot", None, item.revision))
        elif isinstance(item, Event):
            seen.append((item.type, item.entry.key, item.revision))
    return seen


def test_a_snapshot_then_events_resume_after_the_last_event():
    resume = WatchResume()
    assert resume.start_revision == 0
    assert feed(resume, [snapshot(3, ["k"]), put("k", 4)]) == [
        ("snapshot", None, 3),
        ("put", "k", 4),
    ]
    assert resume.start_revision == 5
    # A server that replays too much: 4 was delivered already.
    assert feed(resume, [put("k", 4), put("k", 6)]) == [("put", "k", 6)]
    assert resume.start_revision == 7


def test_a_snapshot_in_several_messages_comes_out_once_and_a_cut_one_is_asked_again():
    resume = WatchResume()
    assert feed(resume, [snapshot(5, ["a", "b"], last=False)]) == []
    resume.disconnected()
    assert resume.start_revision == 0, "no snapshot delivered: ask for one again"
    assert resume.request_store_id == "", "any store can give a snapshot"
    item = resume.receive(snapshot(6, ["a"], last=False))
    assert item is None
    item = resume.receive(snapshot(6, ["b"], last=True))
    assert isinstance(item, Snapshot) and [e.key for e in item.entries] == ["a", "b"]


def test_progress_advances_the_resume_point_only_after_the_snapshot():
    resume = WatchResume()
    assert feed(resume, [progress(9)]) == []
    assert resume.start_revision == 0
    feed(resume, [snapshot(2, []), progress(9)])
    assert resume.start_revision == 10


def test_a_revision_cut_short_resumes_at_itself_and_skips_what_was_delivered():
    resume = WatchResume()
    assert feed(resume, [snapshot(3, []), put("a", 4, more=True), put("b", 4, more=True)]) == [
        ("snapshot", None, 3),
        ("put", "a", 4),
        ("put", "b", 4),
    ]
    assert (resume.start_revision, resume.seen_keys) == (4, {"a", "b"})
    # The server replays revision 4 whole; the keys already delivered are skipped.
    replay = [put("a", 4, more=True), put("b", 4, more=True), put("c", 4), put("d", 5)]
    assert feed(resume, replay) == [("put", "c", 4), ("put", "d", 5)]
    assert (resume.start_revision, resume.seen_keys) == (6, frozenset())


def test_a_watch_resumed_in_another_process_skips_the_keys_it_was_given():
    resume = WatchResume(4, "store-a", seen_keys=["a"])
    assert (resume.start_revision, resume.request_store_id) == (4, "store-a")
    assert feed(resume, [put("a", 4, more=True), put("b", 4)]) == [("put", "b", 4)]
    assert resume.start_revision == 5


def test_the_store_is_learnt_from_the_first_stream_and_held_to_after_the_snapshot():
    resume = WatchResume()
    resume.opened("store-a")
    feed(resume, [snapshot(3, [])])
    assert resume.request_store_id == "store-a"
    resume.opened("store-a")
    with pytest.raises(ProtocolError, match="store-a on a server of store store-b"):
        resume.opened("store-b")


def test_a_snapshot_on_a_resumed_watch_is_a_protocol_error():
    resume = WatchResume(10)
    with pytest.raises(ProtocolError, match="snapshot"):
        resume.receive(snapshot(12, []))


def test_a_negative_start_revision_is_refused():
    with pytest.raises(ValueError, match="start_revision"):
        WatchResume(-1)
