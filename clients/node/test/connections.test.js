// How the client reaches servers, against servers of each test's own: TLS, mutual TLS, tokens,
// timeouts, several addresses, and watches that resume by themselves across a restart and
// refuse to resume on another store. Bad settings fail at once with a clear message.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const jsonkv = require('jsonkv-client');
const { freePort, startServer, blackHole, makePki } = require('./servers');

const { status, JsonKvError } = jsonkv;
const WATCH_DEADLINE_MS = 30_000;
const target = process.env.JSONKV_ADDR;
let pki;
let tokens;

before(() => {
  assert.ok(target, 'JSONKV_ADDR is not set: run the suite with clients/node/test.sh');
  pki = makePki();
  tokens = path.join(pki.dir, 'tokens');
  fs.writeFileSync(tokens, 'write writer-token\nread reader-token\nwrite scoped-token allowed/\n');
});
after(() => fs.rmSync(pki.dir, { recursive: true, force: true }));

// The error a promise rejects with; fails the test if it resolves.
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('the call succeeded');
}

// Runs `body` with a client that is closed afterwards.
async function using(client, body) {
  try {
    return await body(client);
  } finally {
    client.close();
  }
}

test('TLS with a private CA, and tokens', async (t) => {
  const server = await startServer(
    t,
    '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--auth-tokens', tokens,
  );
  const https = `https://${server.addr}`;
  await using(jsonkv.connect(https, { ca: pki.ca, token: 'writer-token' }), async (kv) => {
    await kv.insertJson('greeting', '{"n":1180591620717411303424}');
    assert.equal((await kv.get('greeting')).json, '{"n":1180591620717411303424}');
    assert.deepEqual((await kv.list()).map((e) => e.key), ['greeting']);
  });
  // The CA as a Buffer rather than a path.
  const ca = fs.readFileSync(pki.ca);
  await using(jsonkv.connect(https, { ca, token: 'reader-token' }), async (kv) => {
    assert.equal((await kv.get('greeting')).version, '1');
    const denied = await failure(kv.insert('greeting', 1));
    assert.ok(denied instanceof JsonKvError);
    assert.equal(denied.code, status.PERMISSION_DENIED);
    assert.equal(denied.codeName, 'PERMISSION_DENIED');
  });
  await using(jsonkv.connect(https, { ca, token: 'scoped-token' }), async (kv) => {
    await kv.insert('allowed/k', 1);
    assert.equal((await failure(kv.get('greeting'))).code, status.PERMISSION_DENIED);
  });
  for (const token of [undefined, 'no-such-token']) {
    await using(jsonkv.connect(https, { ca, token }), async (kv) => {
      assert.equal((await failure(kv.get('greeting'))).code, status.UNAUTHENTICATED);
    });
  }
  // Plaintext to a TLS port, or TLS without trusting the CA: the connection fails.
  for (const [addr, options] of [
    [server.addr, {}],
    [https, {}],
  ]) {
    const kv = jsonkv.connect(addr, { ...options, token: 'writer-token', timeoutMs: 5_000 });
    await using(kv, async () => {
      assert.equal((await failure(kv.get('greeting'))).code, status.UNAVAILABLE);
    });
  }
});

test('mutual TLS needs the client certificate', async (t) => {
  const server = await startServer(
    t,
    '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-client-ca', pki.ca,
  );
  const https = `https://${server.addr}`;
  const options = { ca: pki.ca, cert: pki.clientCert, key: pki.clientKey };
  await using(jsonkv.connect(https, options), async (kv) => {
    await kv.insert('k', 'mutual');
    const watch = kv.watchKey('k', { deadlineMs: WATCH_DEADLINE_MS });
    assert.equal((await watch.next()).entries[0].value, 'mutual');
    watch.cancel();
  });
  await using(jsonkv.connect(https, { ca: pki.ca, timeoutMs: 5_000 }), async (kv) => {
    assert.equal((await failure(kv.get('k'))).code, status.UNAVAILABLE);
  });
});

test('a server that is down is passed over for reads and writes', async () => {
  const dead = `127.0.0.1:${await freePort()}`; // nothing listens there
  await using(jsonkv.connect([dead, target]), async (kv) => {
    // The write never left (no connection could be made), so it may go to the next server.
    const { revision } = await kv.insert('node/failover/k', 'v');
    assert.equal(kv.address, `http://${target}`);
    assert.equal((await kv.get('node/failover/k')).mod_revision, revision);
  });
});

test('a write held by a hung server times out and is not sent twice', async (t) => {
  const hole = await blackHole(t);
  await using(jsonkv.connect(`${hole},${target}`, { timeoutMs: 1_000 }), async (kv) => {
    const started = Date.now();
    const slow = await failure(kv.insert('node/hole/k', 'v'));
    assert.equal(slow.code, status.DEADLINE_EXCEEDED);
    const took = Date.now() - started;
    assert.ok(took >= 900 && took < 5_000, `${took} ms`);
    // The server that held the call is left like one that is down.
    assert.equal(kv.address, `http://${target}`);
    assert.equal((await failure(kv.get('node/hole/k'))).code, status.NOT_FOUND);
  });
});

test('a watch resumes by itself across a server restart', async (t) => {
  const server = await startServer(t);
  await using(jsonkv.connect(server.addr), async (kv) => {
    await kv.insert('w/a', 1);
    const watch = kv.watchPrefix('w/', { deadlineMs: WATCH_DEADLINE_MS });
    try {
      assert.deepEqual((await watch.next()).entries.map((e) => e.key), ['w/a']);
      const store = watch.storeId;
      const seen = await kv.insert('w/b', 2);
      assert.equal((await watch.next()).revision, seen.revision);

      await server.restart(); // durable: the same store, resumed from its log
      const later = [(await kv.insert('w/c', 3)).revision, (await kv.delete('w/a')).revision];
      const events = [await watch.next(), await watch.next()];
      assert.deepEqual(
        events.map((e) => [e.type, e.entry.key, e.revision]),
        [
          ['put', 'w/c', later[0]],
          ['delete', 'w/a', later[1]],
        ],
      );
      assert.equal(watch.storeId, store);
      assert.equal(watch.resumeRevision, BigInt(later[1]) + 1n);
    } finally {
      watch.cancel();
    }
  });
});

test('a filtered watch resumes by itself across a restart as the same view', async (t) => {
  const server = await startServer(t);
  await using(jsonkv.connect(server.addr), async (kv) => {
    await kv.insert('o/a', { status: 'open', n: 1, secret: 'x' });
    await kv.insert('o/b', { status: 'closed', n: 2, secret: 'y' });
    const watch = kv.watchPrefix('o/', {
      filter: 'value.status == "open"',
      fields: ['/status', '/n'],
      diff: true,
      deadlineMs: WATCH_DEADLINE_MS,
    });
    const revs = {};
    const events = [];
    try {
      assert.deepEqual(
        (await watch.next()).entries.map((e) => [e.key, e.value]),
        [['o/a', { status: 'open', n: 1 }]],
      );
      const entered = (await kv.merge('o/b', { status: 'open' })).mod_revision;
      const first = await watch.next();
      assert.deepEqual(
        [first.revision, first.viewChange, first.mergePatch],
        [entered, 'entered', { status: 'open' }],
      );

      await server.restart(); // durable: the same store and history, resumed from its log
      // Written before the watch notices the restart: it gets them from history.
      revs.updated = (await kv.merge('o/a', { n: 10, secret: 'z' })).mod_revision;
      await kv.insert('o/c', { status: 'closed', n: 3 }); // outside the view: nothing
      revs.left = (await kv.merge('o/b', { status: 'closed' })).mod_revision;
      revs.again = (await kv.insert('o/c', { status: 'open', n: 3 })).revision;
      events.push(await watch.next(), await watch.next(), await watch.next());
      assert.equal(watch.resumeRevision, BigInt(revs.again) + 1n);
      // The view goes on exactly: what came last before the restart is not sent again, and the
      // next live change follows.
      revs.live = (await kv.merge('o/c', { n: 4 })).mod_revision;
      events.push(await watch.next());
    } finally {
      watch.cancel();
    }

    assert.deepEqual(
      events.map((e) => [e.type, e.entry.key, e.revision, e.viewChange]),
      [
        ['put', 'o/a', revs.updated, 'updated'],
        ['delete', 'o/b', revs.left, 'left'],
        ['put', 'o/c', revs.again, 'entered'],
        ['put', 'o/c', revs.live, 'updated'],
      ],
    );
    // The fields and the diff were asked for again too.
    assert.deepEqual(
      events.map((e) => [e.entry.value, e.mergePatch]),
      [
        [{ status: 'open', n: 10 }, { n: 10 }],
        [null, null],
        [{ status: 'open', n: 3 }, { status: 'open' }],
        [{ status: 'open', n: 4 }, { n: 4 }],
      ],
    );
  });
});

test('a watch never resumes on another store', async (t) => {
  const first = await startServer(t, '--in-memory');
  const other = await startServer(t, '--in-memory');
  await using(jsonkv.connect([first.addr, other.addr]), async (kv) => {
    await kv.insert('k', 1);
    const watch = kv.watchKey('k', { deadlineMs: WATCH_DEADLINE_MS });
    try {
      assert.equal((await watch.next()).entries[0].value, 1);
      const store = watch.storeId;
      await first.stop();
      // The resume goes to the next server, whose store never had these revisions.
      const refused = await failure(watch.next());
      assert.equal(refused.code, status.FAILED_PRECONDITION);
      assert.equal(refused.reason, 'STORE_MISMATCH');
      assert.notEqual(refused.info.metadata.store_id, store);
    } finally {
      watch.cancel();
    }
  });
});

test('a cancelled watch ends, and a watch deadline fails it', async () => {
  await using(jsonkv.connect(target), async (kv) => {
    const watch = kv.watchKey('node/cancelled/k', { deadlineMs: WATCH_DEADLINE_MS });
    assert.equal((await watch.next()).type, 'snapshot');
    setTimeout(() => watch.cancel(), 200);
    const rest = [];
    for await (const item of watch) rest.push(item);
    assert.deepEqual(rest, []);

    const quiet = kv.watchKey('node/quiet/k', { deadlineMs: 1_000 });
    await quiet.next();
    assert.equal((await failure(quiet.next())).code, status.DEADLINE_EXCEEDED);
  });
});

test('errors carry the code, the message and the details', async () => {
  await using(jsonkv.connect(target), async (kv) => {
    const invalid = await failure(kv.insert('', 'v'));
    assert.ok(invalid instanceof JsonKvError && invalid instanceof Error);
    assert.equal(invalid.code, status.INVALID_ARGUMENT);
    assert.deepEqual(invalid.fieldViolations.map((v) => v.field), ['key']);
    assert.match(invalid.message, /^INVALID_ARGUMENT: /);
    const { revision } = await kv.insert('node/errors/k', 1);
    const lost = await failure(kv.insert('node/errors/k', 2, { expected_mod_revision: 0 }));
    assert.equal(lost.reason, 'REVISION_MISMATCH');
    assert.equal(lost.info.metadata.current_mod_revision, revision);
    assert.match(lost.message, /^FAILED_PRECONDITION \(REVISION_MISMATCH\): /);
    assert.deepEqual(jsonkv.errorInfo(lost), lost.info);
  });
});

test('bad settings and arguments are refused at once', async () => {
  for (const [addresses, message] of [
    ['', /none of them empty/],
    ['127.0.0.1:1,,127.0.0.1:2', /none of them empty/],
    [[], /none of them empty/],
    ['ftp://x:1', /give host:port/],
    ['http://x:1/path', /give host:port/],
  ]) {
    assert.throws(() => jsonkv.connect(addresses), message);
  }
  assert.throws(
    () => jsonkv.connect('127.0.0.1:1', { ca: pki.ca }),
    /http:\/\/127.0.0.1:1 is not an https:\/\/ address/,
  );
  assert.throws(
    () => jsonkv.connect('https://127.0.0.1:1', { cert: pki.clientCert }),
    /give both cert and key/,
  );
  assert.throws(
    () => jsonkv.connect('https://127.0.0.1:1', { ca: '/no/such/ca.pem' }),
    /cannot read the CA file/,
  );
  assert.throws(() => jsonkv.connect('127.0.0.1:1', { token: 'two words' }), /token/);
  const kv = jsonkv.connect('127.0.0.1:1');
  try {
    assert.throws(() => kv.watchKey(42), /a key is a string/);
    await assert.rejects(kv.get(Buffer.from('k')), /a key is a string/);
    assert.throws(() => kv.insert('k', undefined), /not a JSON value/);
    await assert.rejects(kv.leaseGrant(10, { id: 2 ** 60 }), /not a safe integer/);
  } finally {
    kv.close();
  }
});
