"""The installed package's smoke test, run by test.sh from outside the repository: put, get,
list, a watch that sees a change, and a watch resumed where the first stopped, against the
server at ADDR. Run: python smoke.py ADDR"""

import sys

import jsonkv_client


def main(addr: str) -> None:
    print(f"smoke: jsonkv_client {jsonkv_client.__version__} from {jsonkv_client.__file__}")
    with jsonkv_client.connect(addr) as kv:
        put = kv.insert("smoke/a", {"n": 2**64 + 1}).revision
        assert kv.get("smoke/a").value == {"n": 2**64 + 1}
        kv.insert("smoke/b", [1, 2])
        assert [e.key for e in kv.list("smoke/")] == ["smoke/a", "smoke/b"]

        with kv.watch_prefix("smoke/", timeout=30) as watch:
            snapshot = next(watch)
            assert isinstance(snapshot, jsonkv_client.Snapshot) and snapshot.revision > put
            changed = kv.insert("smoke/a", "changed").revision
            event = next(watch)
            assert isinstance(event, jsonkv_client.Event)
            assert (event.type, event.revision, event.entry.value) == ("put", changed, "changed")
            resume, store = watch.resume_revision, watch.store_id

        missed = kv.delete("smoke/b").revision
        with kv.watch_prefix("smoke/", start_revision=resume, store_id=store, timeout=30) as again:
            event = next(again)
            assert isinstance(event, jsonkv_client.Event)
            assert (event.type, event.revision, event.entry.key) == ("delete", missed, "smoke/b")
    print("smoke: put, get, list, watch and resumed watch: ok")


if __name__ == "__main__":
    main(sys.argv[1])
