"""Example: inserts, gets and watches a key with jsonkv_client, printing what the watch sees; a
thread watches while the main thread inserts, and the program ends once the watch has seen them.
Then a key lives as long as a lease kept alive in the background, and a lock is taken and
released. Run: .venv/bin/python example.py [ADDR]   (ADDR defaults to 127.0.0.1:50051)"""

import sys
import threading

import jsonkv_client

KEY = "example/greeting"
UPDATES = 3
SESSION = "example/session"
LOCK = "example/lock"


def watch_key(
    watch: jsonkv_client.Watch, subscribed: threading.Event, done: threading.Event
) -> None:
    seen = 0
    for item in watch:
        if isinstance(item, jsonkv_client.Snapshot):
            print(f"watch: snapshot at revision {item.revision}: {[e.value for e in item.entries]}")
            subscribed.set()
        else:
            print(f"watch: {item.type} at revision {item.revision}: {item.entry.value}")
            seen += 1
            if seen == UPDATES:
                done.set()
                return


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else jsonkv_client.DEFAULT_TARGET
    with jsonkv_client.connect(target) as kv:
        # 2**64 + 1 does not fit a double or an int64: the JSON text path keeps it exact.
        revision = kv.insert(KEY, {"hello": "world", "big": 2**64 + 1}).revision
        print(f"insert: revision {revision}")
        print(f"get: {kv.get(KEY)}")

        with kv.watch_key(KEY, timeout=30) as watch:
            subscribed, done = threading.Event(), threading.Event()
            threading.Thread(target=watch_key, args=(watch, subscribed, done), daemon=True).start()
            # Changes after the snapshot are sure to reach the watch as events.
            if not subscribed.wait(timeout=10):
                sys.exit("example: the watch sent no snapshot")
            for n in range(1, UPDATES + 1):
                kv.insert(KEY, {"hello": "world", "n": n})
            if not done.wait(timeout=30):
                sys.exit("example: the watch missed an update")

        # The key lives while the lease does: leaving the block revokes it, and the key goes.
        with kv.lease(10) as lease:
            kv.insert(SESSION, {"started": True}, lease=lease.id)
            keys = list(kv.lease_time_to_live(lease.id, keys=True).keys)
            print(f"lease: {lease.id} (ttl {lease.ttl_seconds}s) holds {keys}")
        print(f"lease: revoked, {SESSION} is gone: {not list(kv.list(SESSION))}")

        # Only one holder at a time; one that dies lets go once its lease expires (10 s here).
        with kv.lock(LOCK, ttl=10, timeout=30) as lock:
            print(f"lock: holding {lock.key}")
        print("lock: released")
    print("done")


if __name__ == "__main__":
    main()
