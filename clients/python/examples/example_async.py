"""Example: the asyncio client. Inserts a key, watches it from a task while the main coroutine
changes it, resumes the watch where it stopped, then holds a key with a lease and takes a lock.
Run: python example_async.py [ADDR]   (ADDR defaults to 127.0.0.1:50051)"""

import asyncio
import sys

import jsonkv_client
import jsonkv_client.aio

KEY = "example/async"
UPDATES = 3


async def watch_updates(watch: jsonkv_client.aio.AsyncWatch, subscribed: asyncio.Event) -> int:
    """Prints what the watch sees until it has seen UPDATES changes; returns the last revision."""
    seen = 0
    async for item in watch:
        if isinstance(item, jsonkv_client.Snapshot):
            print(f"watch: snapshot at revision {item.revision}: {[e.value for e in item.entries]}")
            subscribed.set()
        else:
            print(f"watch: {item.type} at revision {item.revision}: {item.entry.value}")
            seen += 1
            if seen == UPDATES:
                return item.revision
    raise RuntimeError("the watch ended early")


async def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else jsonkv_client.DEFAULT_TARGET
    async with jsonkv_client.aio.connect(target) as kv:
        revision = (await kv.insert(KEY, {"hello": "world", "big": 2**64 + 1})).revision
        print(f"insert: revision {revision}")
        print(f"get: {(await kv.get(KEY)).value}")

        async with kv.watch_key(KEY, timeout=30) as watch:
            subscribed = asyncio.Event()
            watching = asyncio.create_task(watch_updates(watch, subscribed))
            # Changes after the snapshot are sure to reach the watch as events.
            await asyncio.wait_for(subscribed.wait(), 10)
            for n in range(1, UPDATES + 1):
                await kv.insert(KEY, {"hello": "world", "n": n})
            last = await asyncio.wait_for(watching, 30)
            resume, store = watch.resume_revision, watch.store_id

        # A later watch picks up where this one stopped: the change made in between first.
        deleted = (await kv.delete(KEY)).revision
        async with kv.watch_key(KEY, start_revision=resume, store_id=store, timeout=30) as again:
            async for item in again:
                assert isinstance(item, jsonkv_client.Event)
                print(f"resumed after {last}: {item.type} at revision {item.revision}")
                assert item.revision == deleted
                break

        # The key lives while the lease does: leaving the block revokes it, and the key goes.
        async with kv.lease(10) as lease:
            await kv.insert("example/async-session", {"started": True}, lease=lease.id)
            print(
                f"lease: {lease.id} holds {list((await kv.lease_time_to_live(lease.id, keys=True)).keys)}"
            )
        async with kv.lock("example/async-lock", ttl=10, timeout=30) as lock:
            print(f"lock: holding {lock.key}")
        print("lock: released")
    print("done")


if __name__ == "__main__":
    asyncio.run(main())
