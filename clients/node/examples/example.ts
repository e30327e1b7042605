// Example in TypeScript: inserts a key, watches it with `for await` while changing it, resumes
// the watch where it stopped, runs a transaction and a patch, and reads an error's code and
// reason. Type-checked by test.sh (tsc --noEmit) against the installed package's definitions.
// Run: npx tsc -p . --noEmit false --outDir out && node out/example.js [ADDR]
// (ADDR defaults to 127.0.0.1:50051)
import { compare, connect, DEFAULT_TARGET, JsonKvError, op, status } from 'jsonkv-client';
import type { Entry, WatchItem } from 'jsonkv-client';

const KEY = 'example/typed';

async function main(addr: string): Promise<void> {
  const kv = connect(addr, { timeoutMs: 5_000 });
  try {
    const { revision } = await kv.insert(KEY, { hello: 'world' });
    const entry: Entry<{ hello: string }> = await kv.get(KEY);
    console.log(`get: ${entry.value.hello} at revision ${entry.mod_revision}`);

    const watch = kv.watchKey(KEY, { deadlineMs: 30_000 });
    const seen: WatchItem[] = [];
    for await (const item of watch) {
      seen.push(item);
      if (item.type === 'snapshot') await kv.insert(KEY, { hello: 'again' });
      else break;
    }
    console.log(`watch: ${seen.map((item) => item.type).join(', ')}`);

    const resumed = kv.watchKey(KEY, {
      start_revision: watch.resumeRevision,
      store_id: watch.storeId,
      deadlineMs: 30_000,
    });
    await kv.delete(KEY);
    const next = await resumed.next();
    console.log(`resumed: ${next?.type}`);
    resumed.cancel();

    const result = await kv.txn({
      compare: [compare(KEY, { exists: false })],
      success: [op.insert(KEY, { n: 1 }), op.get(KEY)],
    });
    await kv.patch(KEY, { merge: { m: 2 } });
    console.log(`txn: succeeded ${result.succeeded} at ${result.revision}`);

    try {
      await kv.insert(KEY, 'stale', { expected_mod_revision: revision });
    } catch (err) {
      if (!(err instanceof JsonKvError) || err.code !== status.FAILED_PRECONDITION) throw err;
      const current = err.info?.metadata.current_mod_revision;
      console.log(`error: ${err.codeName} ${err.reason}, current mod revision ${current}`);
    }
  } finally {
    kv.close();
  }
}

main(process.argv[2] ?? DEFAULT_TARGET).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
