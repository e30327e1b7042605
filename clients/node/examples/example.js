// Example: inserts, gets and watches a key with jsonkv-client, printing what the watch sees;
// it inserts a few values while the watch runs, and ends once the watch has seen them. Then a key
// lives as long as a lease kept alive in the background, and a lock is taken and released.
// Run: node example.js [ADDR]   (ADDR defaults to 127.0.0.1:50051)
'use strict';

const jsonkv = require('jsonkv-client');

const KEY = 'example/greeting';
const UPDATES = 3;
const SESSION = 'example/session';
const LOCK = 'example/lock';

async function main() {
  const kv = jsonkv.connect(process.argv[2] ?? jsonkv.DEFAULT_TARGET);
  try {
    // 18446744073709551617 (2^64 + 1) is beyond a JS number: insertJson keeps the text exact.
    const { revision } = await kv.insertJson(KEY, '{"hello":"world","big":18446744073709551617}');
    console.log(`insert: revision ${revision}`);
    const entry = await kv.get(KEY);
    console.log(
      `get: ${entry.json} (mod_revision ${entry.mod_revision}, version ${entry.version})`,
    );

    const watch = kv.watchKey(KEY, { deadlineMs: 30_000 });
    try {
      const snapshot = await watch.next();
      console.log(
        `watch: snapshot at revision ${snapshot.revision}: ${snapshot.entries.map((e) => e.json)}`,
      );
      // Changes after the snapshot are sure to reach the watch as events.
      for (let n = 1; n <= UPDATES; n++) await kv.insert(KEY, { hello: 'world', n });
      let seen = 0;
      for await (const event of watch) {
        console.log(`watch: ${event.type} at revision ${event.revision}: ${event.entry.json}`);
        if (++seen === UPDATES) break;
      }
      if (seen < UPDATES) throw new Error('the watch ended before the updates arrived');
    } finally {
      watch.cancel();
    }

    // The key lives while the lease does: closing the lease revokes it, and the key goes.
    const lease = await kv.lease(10);
    try {
      await kv.insert(SESSION, { started: true }, { lease: lease.id });
      const { keys } = await kv.leaseTimeToLive(lease.id, { keys: true });
      console.log(`lease: ${lease.id} (ttl ${lease.ttlSeconds}s) holds ${JSON.stringify(keys)}`);
    } finally {
      await lease.close();
    }
    console.log(`lease: revoked, ${SESSION} is gone: ${(await kv.list(SESSION)).length === 0}`);

    // Only one holder at a time; one that dies lets go once its lease expires (10 s here).
    const lock = await kv.lock(LOCK, { ttl: 10, timeoutMs: 30_000 });
    try {
      console.log(`lock: holding ${lock.key}`);
    } finally {
      await lock.release();
    }
    console.log('lock: released');
    console.log('done');
  } finally {
    kv.close();
  }
}

main().catch((err) => {
  console.error(`example: ${err.message}`);
  process.exitCode = 1;
});
