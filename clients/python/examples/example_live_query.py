"""Example: a live query. Lists the open orders over 100, each with only its status and total,
then watches that view change: an order that starts to match enters it, one that changes while
it matches is updated in it, one that stops matching leaves it, and each put carries the merge
patch from the order's version before. Changes to orders outside the view send nothing.
Run: python example_live_query.py [ADDR]   (ADDR defaults to 127.0.0.1:50051)"""

import sys

import jsonkv_client

PREFIX = "example/orders/"
QUERY = 'value.status == "open" && value.total > 100'
FIELDS = ["/status", "/total"]


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else jsonkv_client.DEFAULT_TARGET
    with jsonkv_client.connect(target) as kv:
        for stale in kv.list(PREFIX):  # a run before this one left its orders
            kv.delete(stale.key)
        kv.insert(PREFIX + "1", {"status": "open", "total": 250, "customer": "ada"})
        kv.insert(PREFIX + "2", {"status": "new", "total": 120, "customer": "bob"})
        kv.insert(PREFIX + "3", {"status": "open", "total": 20, "customer": "cy"})

        for entry in kv.list(PREFIX, filter=QUERY, fields=FIELDS):
            print(f"list: {entry.key} {entry.value}")

        with kv.watch_prefix(PREFIX, filter=QUERY, fields=FIELDS, diff=True, timeout=30) as watch:
            snapshot = next(watch)
            assert isinstance(snapshot, jsonkv_client.Snapshot)
            print(f"watch: snapshot {[e.key for e in snapshot.entries]}")
            kv.merge(PREFIX + "2", {"status": "open"})  # enters the view
            kv.merge(PREFIX + "3", {"total": 30})  # still too small: nothing is sent
            kv.merge(PREFIX + "1", {"total": 300})  # changes in the view
            kv.merge(PREFIX + "2", {"status": "shipped"})  # leaves it
            for _ in range(3):
                event = next(watch)
                assert isinstance(event, jsonkv_client.Event)
                if event.view_change == "left":
                    print(f"watch: left {event.entry.key}")
                else:
                    print(
                        f"watch: {event.view_change} {event.entry.key} {event.entry.value} "
                        f"patch {event.merge_patch}"
                    )
    print("done")


if __name__ == "__main__":
    main()
