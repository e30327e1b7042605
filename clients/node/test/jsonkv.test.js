// Black-box tests of the jsonkv contract from Node, through the installed jsonkv-client
// against the real server at $JSONKV_ADDR (../test.sh starts it). Each test works under its own
// key prefix, so tests sharing a server never meet.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { randomUUID, randomInt } = require('node:crypto');
const { setTimeout: sleep } = require('node:timers/promises');
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const jsonkv = require('jsonkv-client');

const { grpc, compare, op } = jsonkv;
// Bounds every watch stream of this suite, so a missing event fails instead of hanging.
const WATCH_DEADLINE_MS = 30_000;
// Bounds every lock acquisition and every wait for a lease of this suite.
const LOCK_TIMEOUT_MS = 30_000;
const target = process.env.JSONKV_ADDR;
let kv;

before(() => {
  assert.ok(target, 'JSONKV_ADDR is not set: run the suite with clients/node/test.sh');
  kv = jsonkv.connect(target);
});
after(() => kv.close());

function freshPrefix(t) {
  return `node/${t.name.replace(/\W+/g, '-')}/${randomUUID().slice(0, 8)}/`;
}

// The error a call fails with; fails the test if the call succeeds.
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('the call succeeded');
}

// Reads `count` items of a watch.
async function take(watch, count) {
  const items = [];
  while (items.length < count) items.push(await watch.next());
  return items;
}

async function withWatch(watch, body) {
  try {
    return await body(watch);
  } finally {
    watch.cancel();
  }
}

const revisions = (...revs) => revs.map(BigInt);

test('insert/get round trip with nested JSON and unicode', async (t) => {
  const key = `${freshPrefix(t)}ünïcødé/🔑`;
  const value = {
    greeting: 'héllo wörld 🌍',
    日本語: ['値', { deep: { deeper: [1, 2.5, -0.125, null, true, false, ''] } }],
    escapes: 'quote " backslash \\ newline \n tab \t nul \u0000',
    empty: { object: {}, array: [] },
  };
  const inserted = await kv.insert(key, value);
  assert.ok(BigInt(inserted.revision) > 0n);
  assert.equal(inserted.create_revision, inserted.revision);
  assert.equal(inserted.version, '1');

  const entry = await kv.get(key);
  assert.deepEqual(entry.value, value);
  assert.deepEqual(
    [entry.key, entry.create_revision, entry.mod_revision, entry.version],
    [key, inserted.revision, inserted.revision, '1'],
  );

  const replaced = await kv.insert(key, ['replaced']);
  assert.ok(BigInt(replaced.revision) > BigInt(inserted.revision));
  assert.deepEqual([replaced.create_revision, replaced.version], [inserted.revision, '2']);
  assert.deepEqual((await kv.get(key)).value, ['replaced']);
});

for (const [name, digits] of [
  ['int64 max', '9223372036854775807'],
  ['int64 min', '-9223372036854775808'],
  ['2^64+1', '18446744073709551617'],
  ['30 digits', '123456789012345678901234567890'],
]) {
  test(`big integer ${name} survives the JSON text path`, async (t) => {
    const key = `${freshPrefix(t)}big`;
    const negated = digits.startsWith('-') ? digits.slice(1) : `-${digits}`;
    await kv.insertJson(key, `{"n":${digits},"list":[${digits},${negated}]}`);

    const { json } = await kv.get(key);
    // Compared as text: JSON.parse would round these, the server must not.
    assert.ok(json.includes(`"n":${digits}`), json);
    assert.ok(json.includes(`"list":[${digits},${negated}]`), json);
    const [, n] = json.match(/"n":(-?\d+)/);
    assert.equal(BigInt(n), BigInt(digits));
  });
}

test('the default encoding is google.protobuf.Value', async (t) => {
  const key = `${freshPrefix(t)}struct`;
  await kv.insert(key, { hello: 'world', n: 1 });

  const response = await kv.unary('Get', { key });
  assert.equal(response.kv.value_json, '');
  // protobufjs bundles struct.proto with camelCase field names, so keepCase does not reach them.
  const { fields } = response.kv.value.structValue;
  assert.equal(fields.hello.stringValue, 'world');
  assert.equal(fields.n.numberValue, 1);
});

test('WatchKey sends the snapshot, then each insert in order', async (t) => {
  const key = `${freshPrefix(t)}watched`;
  const first = (await kv.insert(key, { n: 0 })).revision;

  const events = await withWatch(
    kv.watchKey(key, { deadlineMs: WATCH_DEADLINE_MS }),
    async (watch) => {
      const snapshot = await watch.next();
      assert.equal(snapshot.type, 'snapshot');
      assert.ok(BigInt(snapshot.revision) >= BigInt(first));
      assert.deepEqual(
        snapshot.entries.map((e) => [e.key, e.value, e.mod_revision, e.version]),
        [[key, { n: 0 }, first, '1']],
      );
      const revs = [];
      for (const n of [1, 2, 3]) revs.push((await kv.insert(key, { n })).revision);
      revs.push((await kv.delete(key)).revision);
      const events = await take(watch, 4);
      assert.deepEqual(
        events.map((e) => e.revision),
        revs,
      );
      return events;
    },
  );

  assert.deepEqual(
    events.map((e) => e.type),
    ['put', 'put', 'put', 'delete'],
  );
  assert.deepEqual(
    events.map((e) => e.entry.value),
    [{ n: 1 }, { n: 2 }, { n: 3 }, null],
  );
  assert.deepEqual(
    events.slice(0, 3).map((e) => e.entry.version),
    ['2', '3', '4'],
  );
  const revs = revisions(first, ...events.map((e) => e.revision));
  assert.ok(
    revs.every((r, i) => i === 0 || r > revs[i - 1]),
    `not increasing: ${revs}`,
  );
});

test('WatchKey of an absent key starts with an empty snapshot', async (t) => {
  const key = `${freshPrefix(t)}absent`;
  await withWatch(kv.watchKey(key, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    const snapshot = await watch.next();
    assert.deepEqual([snapshot.type, snapshot.entries], ['snapshot', []]);

    const created = await kv.insert(key, 'now here');
    const event = await watch.next();
    assert.deepEqual(
      [event.type, event.revision, event.entry.value, event.entry.create_revision],
      ['put', created.revision, 'now here', created.revision],
    );
  });
});

test('WatchPrefix sees only keys under the prefix', async (t) => {
  const prefix = freshPrefix(t);
  const outside = `${prefix.slice(0, -1)}-outside`;
  const a = (await kv.insert(`${prefix}a`, 'a')).revision;
  await kv.insert(outside, 'not watched');

  await withWatch(kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    const snapshot = await watch.next();
    assert.equal(snapshot.type, 'snapshot');
    assert.deepEqual(
      snapshot.entries.map((e) => [e.key, e.value, e.mod_revision]),
      [[`${prefix}a`, 'a', a]],
    );

    const b = (await kv.insert(`${prefix}b`, { b: true })).revision;
    await kv.insert(outside, 'still not watched');
    const c = (await kv.insert(`${prefix}sub/c`, [3])).revision;
    const deleted = (await kv.delete(`${prefix}a`)).revision;
    const events = await take(watch, 3);
    assert.deepEqual(
      events.map((e) => [e.type, e.entry.key, e.revision, e.entry.value]),
      [
        ['put', `${prefix}b`, b, { b: true }],
        ['put', `${prefix}sub/c`, c, [3]],
        ['delete', `${prefix}a`, deleted, null],
      ],
    );
  });
});

test('a large snapshot comes in several messages, the last with last set', async (t) => {
  const prefix = freshPrefix(t);
  const padding = 'x'.repeat(600_000); // the snapshot of three of these cannot fit one message
  const names = ['a', 'b', 'c'];
  for (const name of names) await kv.insert(`${prefix}${name}`, { name, padding });

  const call = kv.stub.WatchPrefix(
    { prefix, value_encoding: 'VALUE_ENCODING_JSON' },
    { deadline: Date.now() + WATCH_DEADLINE_MS },
  );
  const parts = [];
  try {
    for await (const message of call) {
      if (message.response !== 'snapshot') continue;
      parts.push(message.snapshot);
      if (message.snapshot.last) break;
    }
  } finally {
    call.cancel();
  }
  assert.ok(parts.length > 1, `${parts.length} snapshot message(s)`);
  assert.equal(new Set(parts.map((p) => p.revision)).size, 1);
  assert.deepEqual(
    parts.map((p) => p.last),
    parts.map((_, i) => i === parts.length - 1),
  );
  assert.deepEqual(
    parts.flatMap((p) => p.kvs.map((entry) => entry.key)),
    names.map((n) => `${prefix}${n}`),
  );

  await withWatch(kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    const snapshot = await watch.next();
    assert.deepEqual(
      snapshot.entries.map((e) => e.value.name),
      names,
    );
  });
});

test('a watch from start_revision replays exactly the later events', async (t) => {
  const key = `${freshPrefix(t)}resumed`;
  const revs = [];
  for (const n of [0, 1, 2, 3]) revs.push((await kv.insert(key, n)).revision);

  const watch = kv.watchKey(key, { start_revision: revs[1], deadlineMs: WATCH_DEADLINE_MS });
  await withWatch(watch, async () => {
    const replayed = await take(watch, 3);
    assert.deepEqual(
      replayed.map((e) => [e.type, e.revision, e.entry.value]),
      [
        ['put', revs[1], 1],
        ['put', revs[2], 2],
        ['put', revs[3], 3],
      ],
    );
    // The next event is the next change: nothing before it was left out or repeated.
    const live = (await kv.insert(key, 4)).revision;
    const event = await watch.next();
    assert.deepEqual([event.revision, event.entry.value], [live, 4]);
    assert.equal(watch.resumeRevision, BigInt(live) + 1n);
  });
});

test('a watch from a revision resumes there until it sees something', async (t) => {
  const prefix = freshPrefix(t);
  const start = BigInt((await kv.insert(`${prefix}other`, 0)).revision) + 1n;
  const watch = kv.watchKey(`${prefix}later`, {
    start_revision: start.toString(),
    deadlineMs: WATCH_DEADLINE_MS,
  });
  await withWatch(watch, async () => {
    assert.equal(watch.resumeRevision, start);
    const written = (await kv.insert(`${prefix}later`, 1)).revision;
    assert.equal((await watch.next()).revision, written);
    assert.equal(watch.resumeRevision, BigInt(written) + 1n);
  });
});

test('watches name their store, and watches of one server share it', async (t) => {
  const prefix = freshPrefix(t);
  const byKey = kv.watchKey(`${prefix}k`, { deadlineMs: WATCH_DEADLINE_MS });
  const byPrefix = kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS });
  try {
    assert.equal((await byKey.next()).type, 'snapshot');
    assert.equal((await byPrefix.next()).type, 'snapshot');
    assert.ok(byKey.storeId);
    assert.equal(byPrefix.storeId, byKey.storeId);
  } finally {
    byKey.cancel();
    byPrefix.cancel();
  }
});

// The store id of the server, as a fresh watch names it.
async function serverStoreId(key) {
  return withWatch(kv.watchKey(key, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    await watch.next();
    return watch.storeId;
  });
}

test('a watch resumed with its store id continues after its resume revision', async (t) => {
  const prefix = freshPrefix(t);
  const key = `${prefix}k`;
  const { resumeRevision, storeId, seen } = await withWatch(
    kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS }),
    async (watch) => {
      assert.equal((await watch.next()).type, 'snapshot');
      const seen = (await kv.insert(key, 'seen')).revision;
      assert.equal((await watch.next()).revision, seen);
      return { resumeRevision: watch.resumeRevision, storeId: watch.storeId, seen };
    },
  );
  assert.equal(resumeRevision, BigInt(seen) + 1n);

  const missed = [];
  for (const n of [1, 2]) missed.push((await kv.insert(key, n)).revision);
  const resumed = kv.watchPrefix(prefix, {
    start_revision: resumeRevision,
    store_id: storeId,
    deadlineMs: WATCH_DEADLINE_MS,
  });
  await withWatch(resumed, async () => {
    const replayed = await take(resumed, 2);
    assert.deepEqual(
      replayed.map((e) => [e.revision, e.entry.value]),
      [
        [missed[0], 1],
        [missed[1], 2],
      ],
    );
    const live = (await kv.insert(key, 3)).revision;
    assert.equal((await resumed.next()).revision, live);
    assert.equal(resumed.storeId, storeId);
  });
});

for (const method of ['watchKey', 'watchPrefix']) {
  test(`${method} resumed with another store id fails with STORE_MISMATCH`, async (t) => {
    const prefix = freshPrefix(t);
    const key = `${prefix}k`;
    const { revision } = await kv.insert(key, 'v');
    const storeId = await serverStoreId(key);

    const resumed = kv[method](method === 'watchKey' ? key : prefix, {
      start_revision: revision,
      store_id: 'not-this-store',
      deadlineMs: WATCH_DEADLINE_MS,
    });
    const err = await withWatch(resumed, () => failure(resumed.next()));
    assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
    assert.match(err.details, /not-this-store/);
    assert.deepEqual(jsonkv.errorInfo(err), {
      reason: 'STORE_MISMATCH',
      domain: 'jsonkv.dev',
      metadata: { store_id: storeId },
    });
  });
}

test('a watch resumed beyond the store revision fails with STORE_BEHIND', async (t) => {
  const key = `${freshPrefix(t)}k`;
  const current = BigInt((await kv.insert(key, 'v')).revision);
  const storeId = await serverStoreId(key);

  // The store never reached the revision this resume claims to have seen: it lost changes.
  const resumed = kv.watchKey(key, {
    start_revision: current + 1000n,
    store_id: storeId,
    deadlineMs: WATCH_DEADLINE_MS,
  });
  const err = await withWatch(resumed, () => failure(resumed.next()));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  const info = jsonkv.errorInfo(err);
  assert.deepEqual(
    [info.reason, info.domain, info.metadata.store_id],
    ['STORE_BEHIND', 'jsonkv.dev', storeId],
  );
  const behind = BigInt(info.metadata.current_revision);
  assert.ok(current <= behind && behind < current + 999n, `current_revision ${behind}`);
});

test('compare-and-swap succeeds on a match and fails with REVISION_MISMATCH', async (t) => {
  const key = `${freshPrefix(t)}cas`;
  const created = (await kv.insert(key, 'v1', { expected_mod_revision: 0 })).revision;
  const swapped = (await kv.insert(key, 'v2', { expected_mod_revision: created })).revision;
  assert.ok(BigInt(swapped) > BigInt(created));

  let err = await failure(kv.insert(key, 'v3', { expected_mod_revision: created }));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  const info = jsonkv.errorInfo(err);
  assert.deepEqual(info, {
    reason: 'REVISION_MISMATCH',
    domain: 'jsonkv.dev',
    metadata: { key, expected_mod_revision: created, current_mod_revision: swapped },
  });
  assert.equal((await kv.get(key)).value, 'v2');

  // A writer that lost the race retries with the revision the error carries.
  const retried = await kv.insert(key, 'v3', {
    expected_mod_revision: info.metadata.current_mod_revision,
  });
  const entry = await kv.get(key);
  assert.deepEqual([entry.value, entry.mod_revision, entry.version], ['v3', retried.revision, '3']);

  err = await failure(kv.insert(key, 'again', { expected_mod_revision: 0 }));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(jsonkv.errorInfo(err).metadata.current_mod_revision, retried.revision);

  err = await failure(kv.delete(key, { expected_mod_revision: created }));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal((await kv.delete(key, { expected_mod_revision: retried.revision })).deleted, true);
});

test('compare-and-swap on an absent key reports current_mod_revision 0', async (t) => {
  const key = `${freshPrefix(t)}absent`;
  const err = await failure(kv.insert(key, 'v', { expected_mod_revision: 5 }));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(jsonkv.errorInfo(err).metadata.current_mod_revision, '0');
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
});

test('an empty key is INVALID_ARGUMENT, with a BadRequest naming the field', async () => {
  for (const call of [() => kv.get(''), () => kv.insert('', 'v'), () => kv.delete('')]) {
    const err = await failure(call());
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    const fields = jsonkv
      .statusDetails(err, 'google.rpc.BadRequest')
      .flatMap((d) => d.field_violations.map((v) => v.field));
    assert.ok(fields.includes('key'), `BadRequest fields: ${fields}`);
  }
});

test('malformed JSON text is INVALID_ARGUMENT and stores nothing', async (t) => {
  const key = `${freshPrefix(t)}malformed`;
  assert.equal((await failure(kv.insertJson(key, '{not json'))).code, grpc.status.INVALID_ARGUMENT);
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
});

test('a missing key is NOT_FOUND', async (t) => {
  const key = `${freshPrefix(t)}missing`;
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
  assert.equal((await failure(kv.delete(key))).code, grpc.status.NOT_FOUND);
  assert.equal((await kv.delete(key, { allow_missing: true })).deleted, false);
});

test('List pages through the prefix in key order', async (t) => {
  const prefix = freshPrefix(t);
  const names = ['e', 'a', 'd', 'b/1', 'c'];
  for (const name of names) await kv.insert(`${prefix}${name}`, { name });
  await kv.insert(`${prefix.slice(0, -1)}-outside`, 'not listed');

  const listed = await kv.list(prefix, { page_size: 2 });
  const sorted = [...names].sort();
  assert.deepEqual(
    listed.map((e) => e.key),
    sorted.map((n) => `${prefix}${n}`),
  );
  assert.deepEqual(
    listed.map((e) => e.value),
    sorted.map((name) => ({ name })),
  );

  const firstPage = await kv.unary('List', { prefix, page_size: 2 });
  assert.equal(firstPage.kvs.length, 2);
  assert.ok(firstPage.next_page_token);
});

test('example.js runs to completion', () => {
  const example = path.join(__dirname, '..', 'examples', 'example.js');
  const run = spawnSync(process.execPath, [example, target], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  assert.equal(run.status, 0, run.stderr);
  const lines = run.stdout.trimEnd().split('\n');
  assert.match(lines[1], /18446744073709551617/);
  assert.match(lines[2], /^watch: snapshot/);
  assert.deepEqual(
    lines.slice(3, 6).map((l) => l.split(' at ')[0]),
    Array(3).fill('watch: put'),
  );
  assert.match(lines[6], /^lease: \d+ \(ttl 10s\) holds \["example\/session"\]$/);
  assert.equal(lines[7], 'lease: revoked, example/session is gone: true');
  assert.match(lines[8], /^lock: holding example\/lock\/[0-9a-f]+$/);
  assert.deepEqual(lines.slice(9), ['lock: released', 'done']);
});

function eventMessage(key, revision, more = false) {
  return {
    response: 'event',
    event: {
      type: 'EVENT_TYPE_PUT',
      kv: { key, value_json: '1', mod_revision: String(revision) },
      revision: String(revision),
      more_at_revision: more,
    },
  };
}

// The keys and revisions of what a watch at `resume` delivers of `messages`.
function deliver(resume, messages) {
  return messages
    .map((message) => resume.receive(message))
    .filter((item) => item !== null)
    .map((event) => [event.entry.key, event.revision]);
}

// A change of several keys at one revision (another etcd client's transaction, on --etcd) comes
// as events marked more_at_revision but the last. The server's side is tested in Rust; here the
// watch's resume state takes scripted streams, as a resume would see them.
test('a watch stopped inside a revision resumes at it without repeats', () => {
  const first = new jsonkv.WatchResume(4);
  const firstKeys = deliver(first, [eventMessage('a', 4, true), eventMessage('b', 4, true)]);
  assert.deepEqual(firstKeys, [
    ['a', '4'],
    ['b', '4'],
  ]);
  assert.equal(first.startRevision, 4n);
  assert.deepEqual([...first.seenKeys], ['a', 'b']);

  const replay = [
    eventMessage('a', 4, true),
    eventMessage('b', 4, true),
    eventMessage('c', 4),
    eventMessage('d', 5),
  ];
  // As resumed in another process, and as resumed by the same watch.
  for (const second of [new jsonkv.WatchResume(first.startRevision, '', first.seenKeys), first]) {
    assert.deepEqual(deliver(second, replay), [
      ['c', '4'],
      ['d', '5'],
    ]);
    assert.equal(second.startRevision, 6n);
    assert.equal(second.seenKeys.size, 0);
  }
});

test('lease grant, keep-alive, time to live, list and revoke', async (t) => {
  const prefix = freshPrefix(t);
  const granted = await kv.leaseGrant(30);
  assert.equal(typeof granted.id, 'string');
  assert.ok(BigInt(granted.id) > 0n);
  assert.equal(granted.ttl_seconds, '30');
  assert.ok((await kv.leaseList()).includes(granted.id));
  assert.equal(await kv.leaseKeepAlive(granted.id), '30');

  await kv.insert(`${prefix}b`, 1, { lease: granted.id });
  const lastPut = (await kv.insert(`${prefix}a`, 2, { lease: granted.id })).revision;
  const status = await kv.leaseTimeToLive(granted.id, { keys: true });
  assert.deepEqual([status.id, status.granted_ttl_seconds], [granted.id, '30']);
  assert.ok(Number(status.ttl_seconds) > 0 && Number(status.ttl_seconds) <= 30, status.ttl_seconds);
  assert.deepEqual(status.keys, [`${prefix}a`, `${prefix}b`]);
  assert.deepEqual((await kv.leaseTimeToLive(granted.id)).keys, []);
  assert.equal((await kv.get(`${prefix}a`)).lease, granted.id);

  assert.ok(BigInt(await kv.leaseRevoke(granted.id)) > BigInt(lastPut));
  assert.ok(!(await kv.leaseList()).includes(granted.id));
  assert.deepEqual(await kv.list(prefix), []);
  for (const call of [kv.leaseKeepAlive, kv.leaseRevoke, kv.leaseTimeToLive]) {
    assert.equal((await failure(call.call(kv, granted.id))).code, grpc.status.NOT_FOUND);
  }
});

test('lease ids of any size are exact', async (t) => {
  const key = `${freshPrefix(t)}k`;
  // Beyond 2^53, where a number would round it: a BigInt in, a decimal string out.
  const wanted = 2n ** 62n + BigInt(randomInt(2 ** 40));
  const granted = await kv.leaseGrant(30, { id: wanted });
  assert.equal(granted.id, wanted.toString());
  assert.ok((await kv.leaseList()).includes(granted.id));
  await kv.insert(key, 'v', { lease: granted.id });
  assert.equal((await kv.get(key)).lease, granted.id);
  assert.equal((await kv.leaseTimeToLive(wanted)).id, granted.id);
  const again = await failure(kv.leaseGrant(30, { id: granted.id }));
  assert.equal(again.code, grpc.status.ALREADY_EXISTS);
  // A number that large has been rounded already: refused rather than sent.
  await assert.rejects(kv.leaseKeepAlive(Number(wanted)), RangeError);
  await kv.leaseRevoke(granted.id);
});

test('revoke deletes every attached key at one revision', async (t) => {
  const prefix = freshPrefix(t);
  const { id: lease } = await kv.leaseGrant(30);
  const leased = ['a', 'b', 'c'].map((name) => `${prefix}${name}`);
  for (const key of leased) await kv.insert(key, key, { lease });
  await kv.insert(`${prefix}free`, 'no lease');
  // Attached, then detached: a write without a lease takes the key off it.
  await kv.insert(`${prefix}moved`, 1, { lease });
  await kv.insert(`${prefix}moved`, 2);

  const [revision, events] = await withWatch(
    kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS }),
    async (watch) => {
      const snapshot = await watch.next();
      assert.deepEqual(Object.fromEntries(snapshot.entries.map((e) => [e.key, e.lease])), {
        ...Object.fromEntries(leased.map((key) => [key, lease])),
        [`${prefix}free`]: '0',
        [`${prefix}moved`]: '0',
      });
      const revision = await kv.leaseRevoke(lease);
      return [revision, await take(watch, leased.length)];
    },
  );
  assert.deepEqual(
    events.map((e) => [e.type, e.entry.key, e.revision, e.lease, e.cause]),
    leased.map((key) => ['delete', key, revision, lease, 'revoked']),
  );
  assert.deepEqual(
    (await kv.list(prefix)).map((e) => e.key),
    [`${prefix}free`, `${prefix}moved`],
  );
});

test('an expired lease deletes its keys with cause expired', async (t) => {
  const key = `${freshPrefix(t)}ephemeral`;
  const { lease, put, created, expired } = await withWatch(
    kv.watchKey(key, { deadlineMs: WATCH_DEADLINE_MS }),
    async (watch) => {
      assert.deepEqual((await watch.next()).entries, []);
      const { id: lease } = await kv.leaseGrant(1); // and nothing keeps it alive
      const put = (await kv.insert(key, 'short-lived', { lease })).revision;
      const [created, expired] = await take(watch, 2);
      return { lease, put, created, expired };
    },
  );
  assert.deepEqual(
    [created.type, created.revision, created.entry.lease, created.lease, created.cause],
    ['put', put, lease, '0', null],
  );
  assert.deepEqual(
    [expired.type, expired.entry.key, expired.lease, expired.cause],
    ['delete', key, lease, 'expired'],
  );
  assert.ok(BigInt(expired.revision) > BigInt(put));
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
  assert.ok(!(await kv.leaseList()).includes(lease));
});

test('a delete by a client names no lease', async (t) => {
  const key = `${freshPrefix(t)}k`;
  const { id: lease } = await kv.leaseGrant(30);
  await kv.insert(key, 'v', { lease });
  const deleted = await withWatch(
    kv.watchKey(key, { deadlineMs: WATCH_DEADLINE_MS }),
    async (watch) => {
      await watch.next();
      await kv.delete(key);
      return watch.next();
    },
  );
  assert.deepEqual([deleted.type, deleted.lease, deleted.cause], ['delete', '0', null]);
  await kv.leaseRevoke(lease);
});

test('unknown leases are NOT_FOUND, and bad TTLs INVALID_ARGUMENT', async (t) => {
  const { id: gone } = await kv.leaseGrant(30);
  await kv.leaseRevoke(gone);
  const key = `${freshPrefix(t)}k`;
  assert.equal((await failure(kv.insert(key, 'v', { lease: gone }))).code, grpc.status.NOT_FOUND);
  // Nothing was written.
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
  assert.equal((await failure(kv.leaseKeepAlive(gone))).code, grpc.status.NOT_FOUND);

  for (const ttl of [0, -1, 31_536_001]) {
    const err = await failure(kv.leaseGrant(ttl));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    const fields = jsonkv
      .statusDetails(err, 'google.rpc.BadRequest')
      .flatMap((d) => d.field_violations.map((v) => v.field));
    assert.ok(fields.includes('ttl_seconds'), `BadRequest fields: ${fields}`);
  }
  assert.equal((await kv.leaseGrant(31_536_000)).ttl_seconds, '31536000');
});

test('a lease handle keeps its lease alive past two TTLs', async (t) => {
  const key = `${freshPrefix(t)}kept`;
  // A TTL of 2 s leaves a keep-alive every 2/3 s more than a second of slack on a busy machine.
  const lease = await kv.lease(2);
  try {
    await kv.insert(key, 'alive', { lease: lease.id });
    // 2.5 TTLs with no event for the key: the watch ends at its deadline instead.
    const ended = await withWatch(kv.watchKey(key, { deadlineMs: 5_000 }), async (watch) => {
      assert.deepEqual(
        (await watch.next()).entries.map((e) => e.key),
        [key],
      );
      return failure(watch.next());
    });
    assert.equal(ended.code, grpc.status.DEADLINE_EXCEEDED);
    assert.equal(lease.lost, false);
    assert.equal((await kv.get(key)).lease, lease.id);
    assert.equal((await kv.leaseTimeToLive(lease.id)).granted_ttl_seconds, '2');
  } finally {
    await lease.close();
  }
  // Closing it revoked it.
  assert.ok(!(await kv.leaseList()).includes(lease.id));
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
});

test('a lease handle reports its lease lost', async () => {
  const lease = await kv.lease(3);
  try {
    assert.equal(lease.lost, false);
    await kv.leaseRevoke(lease.id); // as if it had expired, or another client revoked it
    assert.equal(await lease.waitLost(LOCK_TIMEOUT_MS), true);
    assert.equal(lease.lost, true);
  } finally {
    // Closing a lost lease has nothing to revoke, and does not fail.
    await lease.close();
  }
});

test('lock holders never overlap', async (t) => {
  const prefix = freshPrefix(t);
  const [name, counter] = [`${prefix}lock`, `${prefix}counter`];
  await kv.insert(counter, 0);
  const [workers, rounds] = [4, 5];
  const holding = []; // how many held the lock, each time one took it
  const revs = []; // each holder's createRevision, in the order they held it
  let active = 0;

  async function work() {
    // A connection each, as separate processes would have.
    const client = jsonkv.connect(target);
    try {
      for (let round = 0; round < rounds; round++) {
        const lock = await client.lock(name, { ttl: 10, timeoutMs: LOCK_TIMEOUT_MS });
        try {
          holding.push(++active);
          revs.push(BigInt(lock.createRevision));
          // Read-modify-write with no compare-and-swap: only the lock keeps it exact.
          const { value } = await client.get(counter);
          await client.insert(counter, value + 1);
          active--;
        } finally {
          await lock.release();
        }
      }
    } finally {
      client.close();
    }
  }

  await Promise.all(Array.from({ length: workers }, work));
  assert.equal((await kv.get(counter)).value, workers * rounds);
  assert.deepEqual(holding, Array(workers * rounds).fill(1));
  // Waiters get the lock in the order they asked for it.
  assert.ok(
    revs.every((r, i) => i === 0 || r > revs[i - 1]),
    `not increasing: ${revs}`,
  );
  assert.deepEqual(await kv.list(`${name}/`), []);
});

test("a lock passes to the waiter when its holder's lease is revoked", async (t) => {
  const name = `${freshPrefix(t)}lock`;
  // A short TTL, so that a keep-alive soon finds the lease revoked.
  const holder = await kv.lock(name, { ttl: 3, timeoutMs: LOCK_TIMEOUT_MS });
  // The waiter's own connection, counting its listings.
  const client = jsonkv.connect(target);
  const lists = [];
  client.list = (...args) => {
    lists.push(args);
    return jsonkv.Client.prototype.list.apply(client, args);
  };
  let waiting;
  try {
    const queued = await withWatch(
      kv.watchPrefix(`${name}/`, { deadlineMs: WATCH_DEADLINE_MS }),
      async (watch) => {
        assert.deepEqual(
          (await watch.next()).entries.map((e) => e.key),
          [holder.key],
        );
        // Once it has the lock, the waiter looks for the holder's key.
        waiting = client.lock(name, { ttl: 30, timeoutMs: LOCK_TIMEOUT_MS }).then(async (lock) => {
          const holderKey = await kv.get(holder.key).then(
            () => 'still there',
            (err) => err.code,
          );
          return { lock, holderKey };
        });
        waiting.catch(() => {}); // handled below; a failure before then must not go unhandled
        // The waiter's key: it is in line behind the holder.
        const queued = await watch.next();
        assert.ok(queued.type === 'put' && queued.entry.key !== holder.key, queued.entry.key);
        // However long it is given, a waiter never gets the lock while the holder holds it.
        const early = await Promise.race([waiting.then(() => 'got it'), sleep(500, 'waiting')]);
        assert.equal(early, 'waiting');
        return queued;
      },
    );
    await kv.leaseRevoke(holder.lease.id);
    const { lock: waiter, holderKey } = await waiting;
    assert.equal(holderKey, grpc.status.NOT_FOUND);
    // It looked before it waited, and again once the holder's key went: no polling.
    assert.equal(lists.length, 2);
    assert.equal(waiter.key, queued.entry.key);
    assert.ok(BigInt(waiter.createRevision) > BigInt(holder.createRevision));
    assert.equal(await holder.lease.waitLost(LOCK_TIMEOUT_MS), true);
    assert.equal(holder.lost, true);
    await holder.release(); // nothing left to revoke
    await waiter.release();
  } finally {
    await holder.release();
    // A waiter a failure left behind gets the lock now, and lets it go.
    await waiting?.then(({ lock }) => lock.release()).catch(() => {});
    client.close();
  }
  assert.deepEqual(await kv.list(`${name}/`), []);
});

test("a lock passes to the waiter when a dead holder's lease expires", async (t) => {
  const name = `${freshPrefix(t)}lock`;
  // A holder that took the lock the documented way, then died: nothing keeps its lease alive.
  const { id: dead } = await kv.leaseGrant(2);
  const deadKey = `${name}/${BigInt(dead).toString(16)}`;
  await kv.insert(deadKey, null, { expected_mod_revision: 0, lease: dead });

  await withWatch(kv.watchKey(deadKey, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    assert.deepEqual(
      (await watch.next()).entries.map((e) => e.key),
      [deadKey],
    );
    const lock = await kv.lock(name, { ttl: 30, timeoutMs: LOCK_TIMEOUT_MS });
    try {
      assert.equal((await failure(kv.get(deadKey))).code, grpc.status.NOT_FOUND);
      const expired = await watch.next();
      assert.deepEqual([expired.type, expired.lease, expired.cause], ['delete', dead, 'expired']);
      assert.deepEqual(
        (await kv.list(`${name}/`)).map((e) => e.key),
        [lock.key],
      );
    } finally {
      await lock.release();
    }
  });
});

test('a lock not acquired in time rejects and leaves no key', async (t) => {
  const name = `${freshPrefix(t)}lock`;
  const held = await kv.lock(name, { ttl: 30, timeoutMs: LOCK_TIMEOUT_MS });
  try {
    const err = await failure(kv.lock(name, { ttl: 30, timeoutMs: 500 }));
    assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
    assert.deepEqual(
      (await kv.list(`${name}/`)).map((e) => e.key),
      [held.key],
    );
  } finally {
    await held.release();
  }
  assert.deepEqual(await kv.list(`${name}/`), []);
});

test('a lock named under another is another lock', async (t) => {
  const name = `${freshPrefix(t)}lock`;
  const inner = await kv.lock(`${name}/inner`, { ttl: 30, timeoutMs: LOCK_TIMEOUT_MS });
  try {
    // The inner lock's key lies under "<name>/", but is no holder of this lock.
    const outer = await kv.lock(name, { ttl: 30, timeoutMs: LOCK_TIMEOUT_MS });
    assert.deepEqual([inner.lost, outer.lost], [false, false]);
    await outer.release();
  } finally {
    await inner.release();
  }
  assert.deepEqual(await kv.list(`${name}/`), []);
});

// Beyond int64 and a double's 2^53: JSON.parse would round it, so it is checked in `json`.
const BIG = '123456789012345678901234567890';
// Beyond 2^53 but within u64: what JSON Patch values carry exactly today (the Python suite pins
// the server bug beyond 64 bits).
const U64_MAX = '18446744073709551615';

// The fields a BadRequest detail of `err` names.
function badRequestFields(err) {
  return jsonkv
    .statusDetails(err, 'google.rpc.BadRequest')
    .flatMap((d) => d.field_violations.map((v) => v.field));
}

// Key -> [json, mod_revision] of every key under `prefix`.
async function state(prefix) {
  const entries = await kv.list(prefix);
  return Object.fromEntries(entries.map((e) => [e.key, [e.json, e.mod_revision]]));
}

test('a txn whose compares hold runs success at one revision', async (t) => {
  const prefix = freshPrefix(t);
  const [a, b, gone] = [`${prefix}a`, `${prefix}b`, `${prefix}gone`];
  const aRev = (await kv.insertJson(a, `{"n":${BIG},"tags":["x"]}`)).revision;
  await kv.insert(b, 1);
  await kv.insert(b, 2);
  await kv.insert(gone, 'doomed');

  const result = await kv.txn({
    compare: [
      compare(a, { mod_revision: aRev }),
      compare(a, { create_revision: aRev }),
      // Member order does not matter; the number is compared exactly.
      compare(a, { value_json: `{"tags":["x"],"n":${BIG}}` }),
      compare(b, { version: 3, result: '<' }),
      compare(b, { version: '1', result: '>' }),
      compare(b, { value: 1, result: '!=' }),
      compare(`${prefix}absent`, { exists: false }),
      compare(gone, { exists: true }),
    ],
    success: [
      op.insertJson(a, `{"n":${BIG}1}`, { expected_mod_revision: aRev }),
      op.patch(b, { json_patch: `[{"op":"replace","path":"","value":[${U64_MAX}]}]` }),
      op.delete(gone),
      op.get(a),
      op.get(gone),
    ],
    failure: [op.insert(`${prefix}failure-ran`, true)],
  });

  assert.equal(result.succeeded, true);
  const [inserted, patched, deleted, gotA, gotGone] = result.results;
  assert.ok(BigInt(result.revision) > BigInt(aRev));
  assert.deepEqual(
    [inserted.revision, patched.mod_revision, deleted.revision],
    [result.revision, result.revision, result.revision],
  );
  assert.deepEqual([inserted.create_revision, inserted.version], [aRev, '2']);
  assert.deepEqual([patched.key, patched.json, patched.version], [b, `[${U64_MAX}]`, '3']);
  assert.equal(deleted.deleted, true);
  // A get sees the writes of the operations before it; an absent key is null, not NOT_FOUND.
  assert.deepEqual(
    [gotA.json, gotA.create_revision, gotA.mod_revision, gotA.version],
    [`{"n":${BIG}1}`, aRev, result.revision, '2'],
  );
  assert.equal(gotGone, null);
  assert.deepEqual(await state(prefix), {
    [a]: [`{"n":${BIG}1}`, result.revision],
    [b]: [`[${U64_MAX}]`, result.revision],
  });
});

test('a txn whose compare fails runs failure and writes nothing else', async (t) => {
  const prefix = freshPrefix(t);
  const [a, b] = [`${prefix}a`, `${prefix}b`];
  const aRev = (await kv.insert(a, 'v1')).revision;
  const bRev = (await kv.insert(b, { keep: true })).revision;

  const result = await kv.txn({
    compare: [compare(a, { mod_revision: aRev }), compare(b, { value: { keep: false } })],
    success: [op.insert(a, 'v2'), op.delete(b), op.insert(`${prefix}success-ran`, true)],
    failure: [op.get(a), op.get(`${prefix}absent`), op.insertJson(`${prefix}failure-ran`, BIG)],
  });

  assert.equal(result.succeeded, false);
  const [gotA, gotAbsent, marker] = result.results;
  assert.deepEqual([gotA.key, gotA.value, gotA.mod_revision, gotA.version], [a, 'v1', aRev, '1']);
  assert.equal(gotAbsent, null);
  assert.equal(marker.revision, result.revision);
  assert.ok(BigInt(result.revision) > BigInt(bRev));
  assert.deepEqual(await state(prefix), {
    [a]: ['"v1"', aRev],
    [b]: ['{"keep":true}', bRev],
    [`${prefix}failure-ran`]: [BIG, result.revision],
  });
});

test("a txn's writes reach a prefix watch as one revision", async (t) => {
  const prefix = freshPrefix(t);
  const [a, b] = [`${prefix}a`, `${prefix}b`];
  await withWatch(kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS }), async (watch) => {
    assert.deepEqual((await watch.next()).entries, []);
    const result = await kv.txn({ success: [op.insert(b, 'b'), op.insert(a, 'a')] });
    assert.equal(result.succeeded, true);
    assert.deepEqual(
      [(await kv.get(a)).mod_revision, (await kv.get(b)).mod_revision],
      [result.revision, result.revision],
    );
    const first = await watch.next();
    // More of this revision follows: a resume would start at it, not after it.
    assert.equal(watch.resumeRevision, BigInt(result.revision));
    assert.deepEqual([...watch.resumeSeenKeys], [first.entry.key]);
    const second = await watch.next();
    assert.equal(watch.resumeRevision, BigInt(result.revision) + 1n);
    const after = (await kv.insert(a, 'later')).revision;
    const third = await watch.next();

    assert.deepEqual(
      [first, second].map((e) => [e.type, e.revision]),
      [
        ['put', result.revision],
        ['put', result.revision],
      ],
    );
    assert.deepEqual(
      Object.fromEntries([first, second].map((e) => [e.entry.key, e.entry.value])),
      { [a]: 'a', [b]: 'b' },
    );
    assert.deepEqual([third.revision, third.entry.value], [after, 'later']);
  });
});

test('a txn writing a key twice is INVALID_ARGUMENT and writes nothing', async (t) => {
  const prefix = freshPrefix(t);
  const key = `${prefix}twice`;
  const err = await failure(
    kv.txn({
      success: [op.insert(`${prefix}other`, 1), op.insert(key, 1), op.patch(key, { merge: 2 })],
    }),
  );
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.ok(badRequestFields(err).includes('success'), `${badRequestFields(err)}`);
  assert.deepEqual(await kv.list(prefix), []);
});

test('a failing operation fails the whole txn', async (t) => {
  const prefix = freshPrefix(t);
  const key = `${prefix}k`;
  const rev = (await kv.insert(key, 1)).revision;
  const err = await failure(
    kv.txn({
      success: [
        op.insert(`${prefix}new`, 1),
        op.insert(key, 2, { expected_mod_revision: `${BigInt(rev) + 99n}` }),
      ],
    }),
  );
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(jsonkv.errorInfo(err).reason, 'REVISION_MISMATCH');
  assert.deepEqual(await state(prefix), { [key]: ['1', rev] });
});

test('txn builders refuse what the contract would', () => {
  for (const bad of [
    () => compare('k'),
    () => compare('k', { version: 1, exists: true }),
    () => compare('k', { version: 1, result: '<=' }),
    () => compare('k', { versoin: 1 }),
    () => compare('k', { mod_revision: 2 ** 60 }),
    () => op.patch('k', {}),
    () => op.patch('k', { merge: {}, json_patch: [] }),
  ]) {
    assert.throws(bad, /compare|patch|safe integer/);
  }
  // Null is a value: a merge patch of null, a compare with null.
  assert.equal(op.patch('k', { merge: null }).patch.merge_json, 'null');
  assert.equal(compare('k', { value: null }).value_json, 'null');
});

test('a merge patch creates, merges, and keeps big integers exact', async (t) => {
  const key = `${freshPrefix(t)}doc`;
  const created = await kv.mergeJson(key, `{"user":{"name":"ada","visits":1},"big":${BIG}}`);
  assert.deepEqual(
    [created.json, created.create_revision, created.mod_revision, created.version],
    [
      `{"user":{"name":"ada","visits":1},"big":${BIG}}`,
      created.mod_revision,
      created.mod_revision,
      '1',
    ],
  );

  const merged = await kv.patch(key, {
    merge_json: `{"user":{"visits":${BIG}0,"name":null},"extra":[1.5,-${BIG}]}`,
  });
  assert.equal(merged.json, `{"user":{"visits":${BIG}0},"big":${BIG},"extra":[1.5,-${BIG}]}`);
  assert.deepEqual([merged.create_revision, merged.version], [created.mod_revision, '2']);
  assert.ok(BigInt(merged.mod_revision) > BigInt(created.mod_revision));
  assert.deepEqual(await kv.get(key), merged);

  // merge() sends JSON.stringify(value); removing a member leaves the others in their order.
  const more = await kv.merge(key, { user: null, extra: 'x' });
  assert.equal(more.json, `{"big":${BIG},"extra":"x"}`);
});

test('a patch is a compare-and-swap with expected_mod_revision and keeps the lease', async (t) => {
  const key = `${freshPrefix(t)}k`;
  const lease = (await kv.leaseGrant(30)).id;
  const rev = (await kv.insert(key, { a: 1 }, { lease })).revision;
  const err = await failure(
    kv.merge(key, { b: 2 }, { expected_mod_revision: `${BigInt(rev) + 99n}` }),
  );
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(jsonkv.errorInfo(err).reason, 'REVISION_MISMATCH');
  assert.equal((await kv.get(key)).mod_revision, rev);

  // No lease given keeps the key's lease: a patch changes the document, not who owns it.
  const patched = await kv.merge(key, { b: 2 }, { expected_mod_revision: rev });
  assert.deepEqual([patched.value, patched.lease], [{ a: 1, b: 2 }, lease]);
  await kv.leaseRevoke(lease);
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
});

test('a JSON Patch applies, and a failing test changes nothing', async (t) => {
  const key = `${freshPrefix(t)}doc`;
  const rev = (await kv.insert(key, { n: 1, list: [1, 2] })).revision;
  const applied = await kv.patch(key, {
    json_patch: [
      { op: 'test', path: '/n', value: 1 },
      { op: 'add', path: '/list/-', value: 3 },
      { op: 'remove', path: '/n' },
    ],
  });
  assert.deepEqual(
    [applied.value, applied.create_revision, applied.version],
    [{ list: [1, 2, 3] }, rev, '2'],
  );
  // As JSON text, numbers beyond 2^53 keep their digits.
  const exact = await kv.patch(key, {
    json_patch: `[{"op":"add","path":"/list/-","value":${U64_MAX}}]`,
  });
  assert.equal(exact.json, `{"list":[1,2,3,${U64_MAX}]}`);

  let err = await failure(
    kv.patch(key, {
      json_patch: [
        { op: 'add', path: '/added', value: true },
        { op: 'test', path: '/list/0', value: 99 },
      ],
    }),
  );
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  const info = jsonkv.errorInfo(err);
  assert.deepEqual(
    [info.reason, info.domain, info.metadata.operation, info.metadata.path],
    ['PATCH_TEST_FAILED', 'jsonkv.dev', '1', '/list/0'],
  );
  assert.deepEqual(await kv.get(key), exact); // the add before the failing test did not happen

  err = await failure(kv.patch(key, { json_patch: [{ op: 'remove', path: '/missing' }] }));
  assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
  assert.equal(jsonkv.errorInfo(err).reason, 'PATCH_PATH_NOT_FOUND');

  err = await failure(kv.patch(key, { json_patch: [{ op: 'frobnicate', path: '/n' }] }));
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.deepEqual(await kv.get(key), exact);
});

test('a JSON Patch of an absent key is NOT_FOUND', async (t) => {
  const key = `${freshPrefix(t)}absent`;
  const err = await failure(
    kv.patch(key, { json_patch: [{ op: 'add', path: '/a', value: 1 }] }),
  );
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.equal((await failure(kv.get(key))).code, grpc.status.NOT_FOUND);
});

for (const kind of ['watchKey', 'watchPrefix']) {
  test(`${kind} with prev_kv carries the value before each put and delete`, async (t) => {
    const prefix = freshPrefix(t);
    const key = `${prefix}k`;
    const watchTarget = kind === 'watchKey' ? key : prefix;
    const withPrev = kv[kind](watchTarget, { prev_kv: true, deadlineMs: WATCH_DEADLINE_MS });
    const without = kv[kind](watchTarget, { deadlineMs: WATCH_DEADLINE_MS });
    try {
      assert.equal((await withPrev.next()).type, 'snapshot');
      assert.equal((await without.next()).type, 'snapshot');
      const created = (await kv.insertJson(key, `{"n":${BIG}}`)).revision;
      const replaced = await kv.merge(key, { n: 2 });
      const deleted = (await kv.delete(key)).revision;
      const events = await take(withPrev, 3);
      const plain = await take(without, 3);

      assert.deepEqual(
        events.map((e) => [e.type, e.revision]),
        [
          ['put', created],
          ['put', replaced.mod_revision],
          ['delete', deleted],
        ],
      );
      const [first, second, third] = events.map((e) => e.prevEntry);
      assert.equal(first, null);
      assert.deepEqual(
        [second.key, second.json, second.create_revision, second.mod_revision, second.version],
        [key, `{"n":${BIG}}`, created, created, '1'],
      );
      assert.deepEqual(third, replaced);
      assert.deepEqual(
        plain.map((e) => e.prevEntry),
        [null, null, null],
      );
    } finally {
      withPrev.cancel();
      without.cancel();
    }
  });
}

// Live queries: List and WatchPrefix with a filter (CEL), fields (JSON Pointers) and diff.
const OPEN = 'value.status == "open"';

test('a filtered list with fields pages through the projected matches', async (t) => {
  const prefix = freshPrefix(t);
  const documents = {
    a: `{"status":"open","total":150,"customer":{"name":"ada","tier":1}}`,
    b: `{"status":"closed","total":500,"customer":{"name":"bob"}}`,
    c: `{"status":"open","total":50,"customer":{"name":"cy"}}`,
    d: `{"status":"open","total":${BIG},"customer":{"name":"dee"},"items":[1,2]}`,
    e: `{"status":"open","total":101}`, // no customer: that pointer names nothing
    f: `"not an object"`, // the filter errors on it: no match
    g: `{"status":"open","total":1000,"customer":{"name":"gus","tier":2}}`,
  };
  const revs = {};
  for (const [name, json] of Object.entries(documents)) {
    revs[name] = (await kv.insertJson(`${prefix}${name}`, json)).revision;
  }
  const filter = 'value.status == "open" && value.total > 100';
  const fields = ['/total', '/customer/name'];

  const listed = await kv.list(prefix, { page_size: 2, filter, fields });
  assert.deepEqual(
    listed.map((e) => [e.key, e.json, e.create_revision, e.mod_revision, e.version]),
    [
      [`${prefix}a`, '{"total":150,"customer":{"name":"ada"}}', revs.a, revs.a, '1'],
      [`${prefix}d`, `{"total":${BIG},"customer":{"name":"dee"}}`, revs.d, revs.d, '1'],
      [`${prefix}e`, '{"total":101}', revs.e, revs.e, '1'],
      [`${prefix}g`, '{"total":1000,"customer":{"name":"gus"}}', revs.g, revs.g, '1'],
    ],
  );
  assert.deepEqual(listed[0].value, { total: 150, customer: { name: 'ada' } });
  // Four matches at two a page: the listing took more than one page.
  const first = await kv.unary('List', { prefix, page_size: 2, filter, fields });
  assert.ok(first.kvs.length <= 2 && first.next_page_token);

  // The filter sees the key too; fields alone project every document.
  const byKey = await kv.list(prefix, {
    filter: 'key.endsWith("/b") || key.endsWith("/e")',
    fields: ['/total'],
  });
  assert.deepEqual(
    byKey.map((e) => [e.key, e.value]),
    [
      [`${prefix}b`, { total: 500 }],
      [`${prefix}e`, { total: 101 }],
    ],
  );
  const tier = await kv.list(prefix, { filter: 'value.customer.tier == 2' });
  assert.deepEqual(
    tier.map((e) => e.json),
    [documents.g],
  );
});

test('a filtered list goes on past a page with no match', async (t) => {
  const prefix = freshPrefix(t);
  // The server reads a bounded number of keys for a page (10 000 today): two matches this far
  // apart leave a page between them that holds none, yet has a next page.
  const filler = 10_100;
  for (let start = 0; start < filler; start += 128) {
    const ops = [];
    for (let n = start; n < Math.min(start + 128, filler); n++) {
      ops.push(op.insert(`${prefix}m/${String(n).padStart(5, '0')}`, { match: false }));
    }
    await kv.txn({ success: ops });
  }
  await kv.insert(`${prefix}a`, { match: true, n: 1 });
  await kv.insert(`${prefix}z`, { match: true, n: 2 });

  const pages = [];
  let page_token = '';
  do {
    const request = { prefix, page_size: 1, page_token, filter: 'value.match' };
    const page = await kv.unary('List', request);
    pages.push(page.kvs.map((e) => e.key));
    page_token = page.next_page_token;
  } while (page_token);
  assert.ok(
    pages.slice(0, -1).some((keys) => keys.length === 0),
    `no empty page to go past: ${JSON.stringify(pages)}`,
  );

  const listed = await kv.list(prefix, { page_size: 1, filter: 'value.match', fields: ['/n'] });
  assert.deepEqual(
    listed.map((e) => [e.key, e.value]),
    [
      [`${prefix}a`, { n: 1 }],
      [`${prefix}z`, { n: 2 }],
    ],
  );
});

test('a filtered watch sees documents enter, change in and leave its view', async (t) => {
  const prefix = freshPrefix(t);
  const [a, b, c, d] = ['a', 'b', 'c', 'd'].map((name) => `${prefix}${name}`);
  await kv.insert(a, { status: 'open', n: 1 });
  await kv.insert(b, { status: 'closed', n: 2 });
  const watch = kv.watchPrefix(prefix, {
    filter: OPEN,
    fields: ['/n'],
    deadlineMs: WATCH_DEADLINE_MS,
  });
  const plain = kv.watchPrefix(prefix, { deadlineMs: WATCH_DEADLINE_MS });
  let events;
  let everything;
  const revs = {};
  try {
    const snapshot = await watch.next();
    assert.equal(snapshot.type, 'snapshot');
    assert.deepEqual(
      snapshot.entries.map((e) => [e.key, e.value]),
      [[a, { n: 1 }]],
    );
    assert.deepEqual(
      (await plain.next()).entries.map((e) => e.key),
      [a, b],
    );

    await kv.insert(b, { status: 'closed', n: 3 }); // matches neither before nor after
    revs.enteredNew = (await kv.insert(c, { status: 'open', n: 4 })).revision;
    revs.entered = (await kv.merge(b, { status: 'open', n: 5 })).mod_revision;
    revs.updated = (await kv.merge(a, { n: 6 })).mod_revision;
    revs.leftByChange = (await kv.merge(a, { status: 'closed' })).mod_revision;
    revs.leftByDelete = (await kv.delete(b)).revision;
    await kv.insert(d, { status: 'closed' }); // never in the view
    await kv.delete(d);
    revs.back = (await kv.insert(a, { status: 'open', n: 7 })).revision;
    // The changes outside the view come between these: had any been sent, it would be here.
    events = await take(watch, 6);
    everything = await take(plain, 9);
  } finally {
    watch.cancel();
    plain.cancel();
  }

  assert.deepEqual(
    events.map((e) => [e.type, e.entry.key, e.revision, e.viewChange, e.entry.value]),
    [
      ['put', c, revs.enteredNew, 'entered', { n: 4 }],
      ['put', b, revs.entered, 'entered', { n: 5 }],
      ['put', a, revs.updated, 'updated', { n: 6 }],
      ['delete', a, revs.leftByChange, 'left', null],
      ['delete', b, revs.leftByDelete, 'left', null],
      ['put', a, revs.back, 'entered', { n: 7 }],
    ],
  );
  // A document that left is named by its key and the change's revision alone.
  assert.deepEqual(
    [events[3].entry.mod_revision, events[3].entry.version],
    [revs.leftByChange, '0'],
  );
  assert.deepEqual(
    events.map((e) => [e.mergePatch, e.mergePatchJson]),
    Array(6).fill([null, null]), // not asked for
  );
  assert.deepEqual(
    everything.map((e) => e.viewChange),
    Array(9).fill(null),
  );
  assert.deepEqual(
    everything.slice(0, 3).map((e) => e.entry.key),
    [b, c, b],
  );
});

test('diff carries the merge patch from the previous version', async (t) => {
  const prefix = freshPrefix(t);
  const key = `${prefix}k`;
  const fresh = `${prefix}new`;
  const fields = ['/status', '/n', '/tags', '/sub'];
  await kv.insert(key, { status: 'closed', n: 1, tags: ['x'] });
  const watch = kv.watchPrefix(prefix, {
    filter: OPEN,
    fields,
    diff: true,
    deadlineMs: WATCH_DEADLINE_MS,
  });
  const without = kv.watchPrefix(prefix, { filter: OPEN, fields, deadlineMs: WATCH_DEADLINE_MS });
  let events;
  let plain;
  try {
    assert.deepEqual((await watch.next()).entries, []);
    assert.deepEqual((await without.next()).entries, []);
    // From the version before, which this view never sent.
    await kv.merge(key, { status: 'open' });
    await kv.mergeJson(key, `{"n":${BIG},"sub":{"a":1.5}}`);
    await kv.merge(key, { tags: null }); // a member removed: null in the patch
    // A member set to null: RFC 7396 cannot say that, so there is no patch.
    await kv.insertJson(key, `{"status":"open","n":${BIG},"sub":{"a":null}}`);
    await kv.insert(fresh, { status: 'open', n: 1 }); // nothing before it
    await kv.delete(key);
    events = await take(watch, 6);
    plain = await take(without, 6);
  } finally {
    watch.cancel();
    without.cancel();
  }

  assert.deepEqual(
    events.map((e) => [e.entry.key, e.viewChange]),
    [
      [key, 'entered'],
      [key, 'updated'],
      [key, 'updated'],
      [key, 'updated'],
      [fresh, 'entered'],
      [key, 'left'],
    ],
  );
  assert.deepEqual(
    events.map((e) => e.mergePatchJson),
    ['{"status":"open"}', `{"n":${BIG},"sub":{"a":1.5}}`, '{"tags":null}', null, null, null],
  );
  assert.deepEqual(
    events.map((e) => e.mergePatch),
    [{ status: 'open' }, { n: Number(BIG), sub: { a: 1.5 } }, { tags: null }, null, null, null],
  );
  assert.deepEqual(
    plain.map((e) => [e.revision, e.entry]),
    events.map((e) => [e.revision, e.entry]),
  );
  assert.deepEqual(
    plain.map((e) => e.mergePatch),
    Array(6).fill(null),
  );
});

test('a bad filter or pointer is INVALID_ARGUMENT naming where', async (t) => {
  const prefix = freshPrefix(t);
  await kv.insert(`${prefix}k`, { status: 'open' });
  for (const [filter, where] of [
    ['value.status ==', '1:16'],
    ['value.a == "x" &&\n  value.(', '2:9'],
  ]) {
    const err = await failure(kv.list(prefix, { filter }));
    assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
    assert.ok(err.details.includes(`invalid filter: ${where}: Syntax error`), err.details);
    assert.deepEqual(
      err.fieldViolations.map((v) => v.field),
      ['filter'],
    );
  }

  const bad = kv.watchPrefix(prefix, { filter: 'value.status ==', deadlineMs: WATCH_DEADLINE_MS });
  const err = await withWatch(bad, (watch) => failure(watch.next()));
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.ok(err.details.includes('invalid filter: 1:16: Syntax error'), err.details);

  const badPointer = await failure(kv.list(prefix, { fields: ['/status', 'n'] }));
  assert.equal(badPointer.code, grpc.status.INVALID_ARGUMENT);
  assert.ok(badPointer.details.includes('invalid fields: [1] "n"'), badPointer.details);
  const pointerWatch = kv.watchPrefix(prefix, { fields: ['/a~2'], deadlineMs: WATCH_DEADLINE_MS });
  const badWatch = await withWatch(pointerWatch, (watch) => failure(watch.next()));
  assert.equal(badWatch.code, grpc.status.INVALID_ARGUMENT);
  assert.ok(badWatch.details.includes('invalid fields: [0] "/a~2"'), badWatch.details);

  // What is not a filter or a list of pointers is refused before anything is sent.
  await assert.rejects(kv.list(prefix, { fields: '/status' }), /array of JSON Pointers/);
  assert.throws(() => kv.watchPrefix(prefix, { filter: true }), /a filter is a string/);
  assert.throws(() => kv.watchKey(`${prefix}k`, { filter: OPEN }), /options of watchPrefix/);
});
