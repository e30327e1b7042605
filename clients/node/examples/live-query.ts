// Example in TypeScript: a live query. Lists the open orders over 100, each with only its status
// and total, then watches that view change: an order that starts to match enters it, one that
// changes while it matches is updated in it, one that stops matching leaves it, and each put
// carries the merge patch from the order's version before. Changes to orders outside the view
// send nothing. Type-checked and run by test.sh.
// Run: npx tsc -p . --noEmit false --outDir out && node out/live-query.js [ADDR]
// (ADDR defaults to 127.0.0.1:50051)
import { connect, DEFAULT_TARGET } from 'jsonkv-client';
import type { ViewChange } from 'jsonkv-client';

const PREFIX = 'example/ts-orders/';
const filter = 'value.status == "open" && value.total > 100';
const fields = ['/status', '/total'];

async function main(addr: string): Promise<void> {
  const kv = connect(addr, { timeoutMs: 5_000 });
  try {
    // A run before this one left its orders.
    for (const stale of await kv.list(PREFIX)) await kv.delete(stale.key);
    await kv.insert(`${PREFIX}1`, { status: 'open', total: 250, customer: 'ada' });
    await kv.insert(`${PREFIX}2`, { status: 'new', total: 120, customer: 'bob' });
    await kv.insert(`${PREFIX}3`, { status: 'open', total: 20, customer: 'cy' });

    for (const entry of await kv.list(PREFIX, { filter, fields })) {
      console.log(`list: ${entry.key} ${entry.json}`);
    }

    const watch = kv.watchPrefix(PREFIX, { filter, fields, diff: true, deadlineMs: 30_000 });
    try {
      const snapshot = await watch.next();
      if (snapshot?.type !== 'snapshot') throw new Error('the watch sent no snapshot');
      console.log(`watch: snapshot ${snapshot.entries.map((e) => e.key).join(', ')}`);
      await kv.merge(`${PREFIX}2`, { status: 'open' }); // enters the view
      await kv.merge(`${PREFIX}3`, { total: 30 }); // still too small: nothing is sent
      await kv.merge(`${PREFIX}1`, { total: 300 }); // changes in the view
      await kv.merge(`${PREFIX}2`, { status: 'shipped' }); // leaves it
      const seen: Array<ViewChange | null> = [];
      while (seen.length < 3) {
        const event = await watch.next();
        if (event === null || event.type === 'snapshot') throw new Error('the watch ended early');
        seen.push(event.viewChange);
        // A put holds the document as it is now; a document that left holds nothing.
        const value = event.type === 'put' ? ` ${event.entry.json}` : '';
        const patch = event.mergePatchJson === null ? '' : ` patch ${event.mergePatchJson}`;
        console.log(`watch: ${event.viewChange} ${event.entry.key}${value}${patch}`);
      }
      if (seen.join() !== 'entered,updated,left') throw new Error(`the view changed: ${seen}`);
    } finally {
      watch.cancel();
    }
  } finally {
    kv.close();
  }
  console.log('done');
}

main(process.argv[2] ?? DEFAULT_TARGET).catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
