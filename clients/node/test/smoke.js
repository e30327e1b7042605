// The installed package's smoke test, run by test.sh from an empty project outside the
// repository: put, get, list, a watch that sees a change, and a watch resumed where the first
// stopped, against the server at ADDR. Run: node smoke.js ADDR
'use strict';

const assert = require('node:assert/strict');
const jsonkv = require('jsonkv-client');

async function main(addr) {
  console.log(`smoke: jsonkv-client from ${require.resolve('jsonkv-client')}`);
  const kv = jsonkv.connect(addr);
  try {
    const put = await kv.insertJson('smoke/a', '{"n":18446744073709551617}');
    assert.equal((await kv.get('smoke/a')).json, '{"n":18446744073709551617}');
    await kv.insert('smoke/b', [1, 2]);
    assert.deepEqual(
      (await kv.list('smoke/')).map((e) => e.key),
      ['smoke/a', 'smoke/b'],
    );

    const watch = kv.watchPrefix('smoke/', { deadlineMs: 30_000 });
    const snapshot = await watch.next();
    assert.equal(snapshot.type, 'snapshot');
    assert.ok(BigInt(snapshot.revision) > BigInt(put.revision));
    const changed = await kv.insert('smoke/a', 'changed');
    const event = await watch.next();
    assert.deepEqual(
      [event.type, event.revision, event.entry.value],
      ['put', changed.revision, 'changed'],
    );
    const { resumeRevision, storeId } = watch;
    watch.cancel();

    const missed = await kv.delete('smoke/b');
    const again = kv.watchPrefix('smoke/', {
      start_revision: resumeRevision,
      store_id: storeId,
      deadlineMs: 30_000,
    });
    const replayed = await again.next();
    assert.deepEqual(
      [replayed.type, replayed.revision, replayed.entry.key],
      ['delete', missed.revision, 'smoke/b'],
    );
    again.cancel();
  } finally {
    kv.close();
  }
  console.log('smoke: put, get, list, watch and resumed watch: ok');
}

main(process.argv[2]).catch((err) => {
  console.error(err);
  process.exit(1);
});
