// A thin Node client for jsonkv (service jsonkv.v1.JsonKv over gRPC), loading
// proto/jsonkv/v1/jsonkv.proto at run time, so it can never drift from the contract.
//
// Values travel as JSON text (`value_json`, responses asked for with VALUE_ENCODING_JSON), the
// contract's lossless path. JSON.parse rounds integers beyond 2^53, so every entry carries the
// exact text as `json` beside the parsed `value`, and insertJson() stores text as written.
// Field names are the proto's (keepCase), int64 fields are decimal strings (longs: String).
//
// Leases: leaseGrant(), leaseKeepAlive(), leaseRevoke(), leaseTimeToLive() and leaseList() are the
// bare calls; insert(key, value, { lease }) attaches a key, which goes when the lease expires or
// is revoked. Lease ids are int64s too, so they come back as decimal strings (random ids are 62
// bits, beyond a number's 2^53), and go in as decimal strings or BigInts (or numbers, only if
// safe integers). `await client.lease(ttl)` grants one and keeps it alive from a timer until
// `await lease.close()`, which revokes it. Locks: `await client.lock(name, { ttl })` resolves once
// this client holds the lock, built on a lease the way etcd's concurrency package builds one, so
// a holder that dies releases it once its lease expires; `await lock.release()` lets it go.
//
// Transactions and patches: patch(key, { merge }) (or merge(key, value)) applies an RFC 7396
// merge patch on the server, patch(key, { json_patch }) an RFC 6902 JSON Patch; both resolve to
// the resulting entry. txn({ compare, success, failure }) takes conditions made by compare() and
// operations made by op.get(), op.insert(), op.delete() and op.patch(), and resolves to
// { succeeded, revision, results }. Watches take `prev_kv: true` to get each key's value before
// the change as `event.prevEntry`.
'use strict';

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_ROOT = path.resolve(__dirname, '..', '..', 'proto');
const DEFAULT_TARGET = '127.0.0.1:50051';
// Every unary call gets a deadline, so no call can hang forever.
const DEFAULT_TIMEOUT_MS = 10_000;
// The response header of every watch stream that names the store its revisions belong to.
const STORE_ID_HEADER = 'jsonkv-store-id';

// google/protobuf/struct.proto, which jsonkv.proto imports, comes bundled with protobufjs.
const definition = protoLoader.loadSync('jsonkv/v1/jsonkv.proto', {
  includeDirs: [PROTO_ROOT],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { JsonKv } = grpc.loadPackageDefinition(definition).jsonkv.v1;

// google.rpc.Status and ErrorInfo, to read the details of an error (grpc-status-details-bin).
// `Any` here is wire-compatible with google.protobuf.Any.
const rpc = protobuf.parse(
  `
  syntax = "proto3";
  package google.rpc;
  message Any { string type_url = 1; bytes value = 2; }
  message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
  message ErrorInfo { string reason = 1; string domain = 2; map<string, string> metadata = 3; }
  message FieldViolation { string field = 1; string description = 2; }
  message BadRequest { repeated FieldViolation field_violations = 1; }
`,
  { keepCase: true },
).root;

// A stored key: `json` is the exact JSON text, `value` the parsed value (null for a delete),
// `lease` the lease the key is attached to ('0' if none).
function toEntry(kv) {
  return {
    key: kv.key,
    json: kv.value_json,
    value: kv.value_json ? JSON.parse(kv.value_json) : null,
    create_revision: kv.create_revision,
    mod_revision: kv.mod_revision,
    version: kv.version,
    lease: kv.lease,
  };
}

// An entry for a KeyValue that may be unset (null): a Get of an absent key, no previous value.
function toEntryOrNull(kv) {
  return kv ? toEntry(kv) : null;
}

const EVENT_TYPES = { EVENT_TYPE_PUT: 'put', EVENT_TYPE_DELETE: 'delete' };
const CAUSES = { CAUSE_EXPIRED: 'expired', CAUSE_REVOKED: 'revoked' };

// An int64 for a request: a decimal string or a BigInt as it is; a number only if it is a safe
// integer, since a larger one has already been rounded and would name another lease.
function int64(value, name) {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new RangeError(`${name} ${value} is not a safe integer: pass it as a string or BigInt`);
  }
  return value;
}

// The requests of the RPCs a transaction can hold, built one way for the call and for op.*.

function getRequest(key) {
  return { key, value_encoding: 'VALUE_ENCODING_JSON' };
}

function insertRequest(key, json, { expected_mod_revision, lease = 0 } = {}) {
  return { key, value_json: json, expected_mod_revision, lease: int64(lease, 'lease') };
}

function deleteRequest(key, { expected_mod_revision, allow_missing = false } = {}) {
  return { key, expected_mod_revision, allow_missing };
}

// Exactly one of `merge` (any JSON value, null included, sent as JSON.stringify(merge)),
// `merge_json` (JSON text, sent as written) and `json_patch` (an array of operations, or the
// text of one sent as written).
function patchRequest(key, patch = {}) {
  const { merge, merge_json, json_patch, expected_mod_revision, lease = 0 } = patch;
  const given = { merge, merge_json, json_patch };
  const set = Object.keys(given).filter((name) => given[name] !== undefined);
  if (set.length !== 1) {
    throw new TypeError(
      `patch of ${key}: give exactly one of merge, merge_json and json_patch, not [${set}]`,
    );
  }
  const request = {
    key,
    expected_mod_revision,
    lease: int64(lease, 'lease'),
    value_encoding: 'VALUE_ENCODING_JSON',
  };
  if (merge !== undefined) request.merge_json = JSON.stringify(merge);
  else if (merge_json !== undefined) request.merge_json = merge_json;
  else if (typeof json_patch === 'string') request.json_patch = json_patch;
  else request.json_patch = JSON.stringify(json_patch);
  return request;
}

const COMPARE_RESULTS = {
  '==': 'COMPARE_RESULT_EQUAL',
  '!=': 'COMPARE_RESULT_NOT_EQUAL',
  '<': 'COMPARE_RESULT_LESS',
  '>': 'COMPARE_RESULT_GREATER',
};
const COMPARE_TARGETS = [
  'mod_revision',
  'create_revision',
  'version',
  'value',
  'value_json',
  'exists',
];

// One condition of a transaction: the key's `target <result> given`, with `result` one of '=='
// (the default), '!=', '<', '>'. compare('a', { mod_revision: rev }) holds when a's mod revision
// is rev; compare('a', { version: 3, result: '<' }) when a was written fewer than 3 times since
// it was created. Exactly one target: `mod_revision`, `create_revision`, `version` (all 0 for an
// absent key; numbers or decimal strings), `value` (the document, sent as JSON.stringify;
// compared as JSON; an absent key equals none), `value_json` (the same as JSON text, sent as
// written) or `exists`; `value`, `value_json` and `exists` take '==' and '!=' only.
function compare(key, { result = '==', ...target } = {}) {
  if (!(result in COMPARE_RESULTS)) {
    const known = Object.keys(COMPARE_RESULTS).join(' ');
    throw new TypeError(`compare result ${result} is none of ${known}`);
  }
  const set = Object.keys(target).filter((name) => target[name] !== undefined);
  if (set.length !== 1 || !COMPARE_TARGETS.includes(set[0])) {
    throw new TypeError(
      `compare of ${key}: give exactly one of ${COMPARE_TARGETS.join(', ')}, not [${set}]`,
    );
  }
  const [name] = set;
  const request = { key, result: COMPARE_RESULTS[result] };
  if (name === 'value') request.value_json = JSON.stringify(target.value);
  else if (name === 'exists') request.exists = target.exists;
  else request[name] = name === 'value_json' ? target[name] : int64(target[name], name);
  return request;
}

// The operations of a transaction; their options are those of the Client methods of the same
// names, and so are their results: get an entry (null if the key is absent), insert and delete
// the response, patch the entry after the patch.
const op = {
  get: (key) => ({ get: getRequest(key) }),
  insert: (key, value, options) => op.insertJson(key, JSON.stringify(value), options),
  insertJson: (key, json, options) => ({ insert: insertRequest(key, json, options) }),
  delete: (key, options) => ({ delete: deleteRequest(key, options) }),
  patch: (key, patch) => ({ patch: patchRequest(key, patch) }),
};

// One operation's result, as the Client method of its name resolves.
function opResult(result) {
  switch (result.response) {
    case 'get':
      return toEntryOrNull(result.get.kv);
    case 'patch':
      return toEntry(result.patch.kv);
    default:
      return result[result.response];
  }
}

// One watch stream: next() resolves to a snapshot ({ type: 'snapshot', revision, entries }),
// unless the watch started from a revision, then to events ({ type: 'put' | 'delete', revision,
// entry, lease, cause, prevEntry }): a delete that a lease's end caused names the `lease` and the
// `cause`, 'expired' or 'revoked'; any other event has `lease` '0' and `cause` null (a put shows
// the key's lease in `entry.lease`; on a cluster, `--etcd`, a lease's deletes come as plain
// deletes). `prevEntry` is the key just before the change on a watch asked for with `prev_kv`,
// null if the key did not exist then (or it was not asked for). A
// snapshot sent in several messages comes out as one. Progress notices are consumed here: they
// only advance `resumeRevision`, the start_revision that resumes after all seen so far.
// `storeId` is the store those revisions belong to (the stream's jsonkv-store-id header, set
// before the first item): resume with both, since resuming from another store's revisions would
// silently skip changes. Resume with `resumeSeenKeys` too (as `seen_keys`): the keys already seen
// of a change of several keys at one revision that the stream stopped in the middle of (events
// marked more_at_revision; empty otherwise), which the resume replays whole. next() rejects with
// the stream's error, and resolves to null at the end.
class Watch {
  constructor(call, startRevision = 0, seenKeys = []) {
    this.call = call;
    this.messages = call[Symbol.asyncIterator]();
    // A watch started at a revision resumes there until it has seen something: 0 would ask for
    // a snapshot instead of the events the caller asked for.
    this.resumeRevision = BigInt(startRevision);
    this.resumeSeenKeys = new Set(seenKeys);
    this.storeId = '';
    call.on('metadata', (metadata) => {
      this.storeId = String(metadata.get(STORE_ID_HEADER)[0] ?? '');
    });
  }

  async next() {
    const entries = [];
    for (;;) {
      const { value: msg, done } = await this.messages.next();
      if (done) return null;
      if (msg.response === 'progress') {
        this.seen(msg.progress.revision);
      } else if (msg.response === 'snapshot') {
        entries.push(...msg.snapshot.kvs.map(toEntry));
        if (msg.snapshot.last) {
          this.seen(msg.snapshot.revision);
          return { type: 'snapshot', revision: msg.snapshot.revision, entries };
        }
      } else if (msg.response === 'event') {
        const revision = BigInt(msg.event.revision);
        const key = msg.event.kv.key;
        // Seen before this watch resumed.
        if (revision === this.resumeRevision && this.resumeSeenKeys.has(key)) continue;
        if (msg.event.more_at_revision) {
          // More of this revision follows: resume at it, not after it.
          this.resumeRevision = revision;
          this.resumeSeenKeys.add(key);
        } else {
          this.seen(msg.event.revision);
        }
        const type = EVENT_TYPES[msg.event.type] ?? 'unspecified';
        return {
          type,
          revision: msg.event.revision,
          entry: toEntry(msg.event.kv),
          lease: msg.event.lease,
          cause: CAUSES[msg.event.cause] ?? null,
          prevEntry: toEntryOrNull(msg.event.prev_kv),
        };
      }
    }
  }

  seen(revision) {
    const next = BigInt(revision) + 1n;
    if (next > this.resumeRevision) {
      this.resumeRevision = next;
      this.resumeSeenKeys = new Set();
    }
  }

  async *[Symbol.asyncIterator]() {
    for (let item = await this.next(); item !== null; item = await this.next()) yield item;
  }

  // Ends the stream; a pending next() rejects with CANCELLED.
  cancel() {
    this.call.cancel();
  }
}

// A granted lease that a timer keeps alive, calling LeaseKeepAlive every third of its TTL, until
// close() stops it and revokes the lease, deleting the keys attached to it. Get one from
// client.lease(). `id` is a decimal string, `ttlSeconds` the TTL granted (a number).
// A keep-alive that fails for a passing reason (UNAVAILABLE, a deadline) is tried again at the
// next third. One answered NOT_FOUND means the lease is gone (it expired before a keep-alive got
// through, or was revoked elsewhere), and so are its keys: `lost` turns true, the timer stops,
// and close() has nothing left to revoke. The timer does not keep the process alive.
class Lease {
  constructor(client, id, ttlSeconds) {
    this.client = client;
    this.id = id;
    this.ttlSeconds = ttlSeconds;
    this.lost = false;
    this.closed = false;
    this.whenLost = new Promise((resolve) => {
      this.markLost = resolve;
    });
    this.inflight = Promise.resolve();
    this.periodMs = (ttlSeconds * 1000) / 3;
    this.schedule(Date.now());
  }

  // The next keep-alive, a third of the TTL after the start of the last.
  schedule(lastStart) {
    this.timer = setTimeout(
      () => this.keepAlive(),
      Math.max(0, lastStart + this.periodMs - Date.now()),
    );
    this.timer.unref();
  }

  keepAlive() {
    const start = Date.now();
    // A keep-alive that hangs must not hold up the next one.
    const timeoutMs = Math.min(this.client.timeoutMs, this.periodMs);
    const again = () => {
      if (!this.closed) this.schedule(start);
    };
    this.inflight = this.client
      .unary('LeaseKeepAlive', { id: this.id }, timeoutMs)
      .then(again, (err) => {
        if (err.code === grpc.status.NOT_FOUND) {
          this.lost = true;
          this.markLost();
        } else if (typeof err.code === 'number') {
          again(); // a passing failure: try again at the next third
        } // with no code it is no call's error: the client was closed under the lease
      });
  }

  // Resolves to true once the lease is lost, or to false after `timeoutMs`.
  async waitLost(timeoutMs) {
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(resolve, timeoutMs, false);
    });
    try {
      return await Promise.race([this.whenLost.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  // Stops the keep-alives and revokes the lease (unless it was lost). Idempotent.
  async close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    // The keep-alive in flight has a deadline, so this wait is bounded.
    await this.inflight;
    if (this.lost) return;
    try {
      await this.client.leaseRevoke(this.id);
    } catch (err) {
      if (err.code !== grpc.status.NOT_FOUND) throw err;
    }
  }
}

// A held lock: client.lock() resolves to one once it holds it. release() revokes the lease, which
// deletes `key` and hands the lock to the next waiter. The lock is held only while its lease
// lives: if a keep-alive finds the lease gone (`lost`), another holder may already have the lock.
// `createRevision` (our key's, a decimal string) grows with every acquisition of the lock, so it
// can serve as a fencing token.
class Lock {
  constructor(name, key, lease, createRevision) {
    this.name = name;
    this.key = key;
    this.lease = lease;
    this.createRevision = createRevision;
  }

  get lost() {
    return this.lease.lost;
  }

  release() {
    return this.lease.close();
  }
}

// What client.lock() rejects with when its `timeoutMs` passes first: like a call's error, its
// `code` is grpc.status.DEADLINE_EXCEEDED.
function lockTimeout(name, cause) {
  const err = new Error(`lock ${name}: not acquired in time`, { cause });
  err.code = grpc.status.DEADLINE_EXCEEDED;
  return err;
}

// A connection to one jsonkv server. Calls return promises; errors are grpc-js ServiceErrors
// (`code` is a grpc.status value; errorInfo(err) reads their ErrorInfo detail).
class Client {
  constructor(target = DEFAULT_TARGET, { timeoutMs = DEFAULT_TIMEOUT_MS } = {}) {
    // The generated client, for whatever the helpers leave out.
    this.stub = new JsonKv(target, grpc.credentials.createInsecure());
    this.timeoutMs = timeoutMs;
  }

  close() {
    this.stub.close();
  }

  unary(method, request, timeoutMs = this.timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      this.stub[method](request, { deadline }, (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  async get(key) {
    const response = await this.unary('Get', getRequest(key));
    return toEntry(response.kv);
  }

  // Stores JSON.stringify(value). Returns the response: `revision` is the key's new mod revision.
  insert(key, value, options = {}) {
    return this.insertJson(key, JSON.stringify(value), options);
  }

  // Stores JSON text as written: numbers of any size survive exactly.
  // `expected_mod_revision` (number or decimal string): only if the key's mod revision is that
  // (0: only if absent). `lease` (an id): attaches the key to that live lease (NOT_FOUND, and
  // nothing written, if it is not live); 0 or none detaches it from any.
  async insertJson(key, json, options = {}) {
    return this.unary('Insert', insertRequest(key, json, options));
  }

  delete(key, options = {}) {
    return this.unary('Delete', deleteRequest(key, options));
  }

  // Changes the key's document on the server, atomically, and resolves to the key after it (its
  // `mod_revision` is the patch's revision). Give exactly one of:
  // - `merge`: an RFC 7396 merge patch ({ a: { b: 1 }, c: null } sets a.b, removes c), sent as
  //   JSON.stringify(merge); `merge_json`: the same as JSON text, sent as written (lossless).
  //   On an absent key it creates the key, applied to null.
  // - `json_patch`: an RFC 6902 JSON Patch, an array of operations (add, remove, replace, move,
  //   copy, test) applied in order, all or none, or its JSON text. NOT_FOUND on an absent key; a
  //   `test` that fails or a path that does not exist is FAILED_PRECONDITION (errorInfo reason
  //   PATCH_TEST_FAILED or PATCH_PATH_NOT_FOUND, with the `operation` index and `path`).
  // With `expected_mod_revision`, only if the key's mod revision is that (else
  // FAILED_PRECONDITION, REVISION_MISMATCH). `lease` attaches the key to that live lease; 0 or
  // none keeps the lease it has. A malformed patch is INVALID_ARGUMENT. Nothing is changed on any
  // error.
  async patch(key, patch) {
    return toEntry((await this.unary('Patch', patchRequest(key, patch))).kv);
  }

  // patch(key, { merge: value, ...options }).
  merge(key, value, options = {}) {
    return this.patch(key, { ...options, merge: value });
  }

  // patch(key, { merge_json: json, ...options }): numbers of any size survive exactly.
  mergeJson(key, json, options = {}) {
    return this.patch(key, { ...options, merge_json: json });
  }

  // If every comparison holds (none: always), runs `success`, otherwise `failure`; every write
  // of the branch at one revision, all or nothing, and watchers see them together:
  //   const { succeeded, revision, results } = await client.txn({
  //     compare: [compare('job', { mod_revision: seen }), compare('lock', { exists: false })],
  //     success: [op.insert('job', { state: 'run' }), op.patch('stats', { merge: { runs: 3 } })],
  //     failure: [op.get('job')],
  //   });
  // `results` has one result per operation of the branch that ran (see `op`); `revision` is that
  // of the writes, or if none the one it read at. Operations run in order, and a get sees the
  // writes before it. Failing comparisons are not an error (`succeeded` is false); an operation
  // that fails (a mismatched `expected_mod_revision`, a patch that does not apply, a delete of an
  // absent key without `allow_missing`) rejects the call with its error and changes nothing. A
  // branch writes each key at most once (INVALID_ARGUMENT otherwise).
  async txn({ compare = [], success = [], failure = [] } = {}) {
    const response = await this.unary('Txn', { compare, success, failure });
    return {
      succeeded: response.succeeded,
      revision: response.revision,
      results: response.results.map(opResult),
    };
  }

  // Every key under `prefix` in key order, fetching a page at a time. With `min_revision`, each
  // page is read once the server has applied that revision.
  async list(prefix = '', { page_size = 0, min_revision = 0 } = {}) {
    const entries = [];
    let page_token = '';
    do {
      const response = await this.unary('List', {
        prefix,
        page_size,
        page_token,
        min_revision,
        value_encoding: 'VALUE_ENCODING_JSON',
      });
      entries.push(...response.kvs.map(toEntry));
      page_token = response.next_page_token;
    } while (page_token);
    return entries;
  }

  // `deadlineMs`, when given, bounds the whole stream. To resume an earlier watch, pass its
  // `resumeRevision` as `start_revision`, its `storeId` as `store_id` and its `resumeSeenKeys`
  // as `seen_keys`: the watch then fails with FAILED_PRECONDITION (STORE_MISMATCH,
  // STORE_BEHIND) where resuming would skip changes, and repeats none it saw. With `prev_kv`,
  // each event carries the key as it was before the change (`prevEntry`).
  watchKey(
    key,
    { start_revision = 0, store_id = '', seen_keys = [], prev_kv = false, deadlineMs } = {},
  ) {
    const request = {
      key,
      start_revision,
      store_id,
      prev_kv,
      value_encoding: 'VALUE_ENCODING_JSON',
    };
    const call = this.stub.WatchKey(request, streamOptions(deadlineMs));
    return new Watch(call, start_revision, seen_keys);
  }

  // The options are as in watchKey().
  watchPrefix(
    prefix,
    { start_revision = 0, store_id = '', seen_keys = [], prev_kv = false, deadlineMs } = {},
  ) {
    const request = {
      prefix,
      start_revision,
      store_id,
      prev_kv,
      value_encoding: 'VALUE_ENCODING_JSON',
    };
    const call = this.stub.WatchPrefix(request, streamOptions(deadlineMs));
    return new Watch(call, start_revision, seen_keys);
  }

  // Grants a lease of `ttlSeconds` (1 to 31536000, else INVALID_ARGUMENT), with `id` if given
  // (ALREADY_EXISTS if that lease is live), else one the server picks. Resolves to the response:
  // its `id` and the `ttl_seconds` granted (decimal strings). Nothing keeps it alive: see lease().
  async leaseGrant(ttlSeconds, { id = 0 } = {}) {
    return this.unary('LeaseGrant', { ttl_seconds: ttlSeconds, id: int64(id, 'id') });
  }

  // Restarts the lease's TTL, once; resolves to the TTL (a decimal string). NOT_FOUND if it is not
  // live.
  async leaseKeepAlive(id) {
    return (await this.unary('LeaseKeepAlive', { id: int64(id, 'id') })).ttl_seconds;
  }

  // Ends the lease now, deleting every key attached to it at one revision, which it resolves to.
  // NOT_FOUND if it is not live.
  async leaseRevoke(id) {
    return (await this.unary('LeaseRevoke', { id: int64(id, 'id') })).revision;
  }

  // Resolves to the response: the lease's `ttl_seconds` left (rounded up), its
  // `granted_ttl_seconds` and, with `keys`, the `keys` attached to it in key order. NOT_FOUND if
  // it is not live.
  async leaseTimeToLive(id, { keys = false } = {}) {
    return this.unary('LeaseTimeToLive', { id: int64(id, 'id'), keys });
  }

  // The ids of every live lease, in order.
  async leaseList() {
    return (await this.unary('LeaseList', {})).ids;
  }

  // Grants a lease (as leaseGrant()) and keeps it alive until `await lease.close()`:
  // `const lease = await client.lease(10); await client.insert(key, value, { lease: lease.id })`.
  async lease(ttlSeconds, { id } = {}) {
    const granted = await this.leaseGrant(ttlSeconds, { id });
    return new Lease(this, granted.id, Number(granted.ttl_seconds));
  }

  // Resolves once this client holds the lock `name`, to a Lock: `const lock = await
  // client.lock('jobs/nightly', { ttl: 10, timeoutMs: 30_000 }); try { ... } finally { await
  // lock.release(); }`. Rejects with lockTimeout's error if `timeoutMs` (none: no limit) passes
  // first.
  // As etcd's concurrency.Mutex: a lease of `ttl` seconds (default 60, kept alive while held)
  // owns the key `<name>/<lease id in hex>`, created only if absent. The holder is the key under
  // `<name>/` with the lowest create revision; every other waiter watches the key created just
  // before its own until that is deleted, then looks again, so waiters get the lock in the order
  // they asked and a release wakes only the next. A holder that dies without releasing holds the
  // lock until its lease expires, `ttl` seconds at most. Keys of another lock named under
  // `<name>/` do not count. The Python client's locks are the same keys: the two interoperate.
  async lock(name, { ttl = 60, timeoutMs } = {}) {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    const lease = await this.lease(ttl);
    try {
      const prefix = `${name}/`;
      const key = `${prefix}${BigInt(lease.id).toString(16)}`;
      const created = await this.insert(key, null, { expected_mod_revision: 0, lease: lease.id });
      const mine = BigInt(created.create_revision);
      for (;;) {
        // Each page is read once the server has our key: none created before it hides.
        const waiters = (await this.list(prefix, { min_revision: created.create_revision })).filter(
          (entry) => !entry.key.slice(prefix.length).includes('/'),
        );
        if (!waiters.some((entry) => entry.key === key)) {
          throw new Error(`lock ${name}: ${key} was deleted while waiting`);
        }
        const before = waiters.filter((entry) => BigInt(entry.create_revision) < mine);
        if (before.length === 0) return new Lock(name, key, lease, created.create_revision);
        const predecessor = before.reduce((a, b) =>
          BigInt(b.create_revision) > BigInt(a.create_revision) ? b : a,
        );
        await this.waitDeleted(predecessor, deadline, name);
      }
    } catch (err) {
      // The lease would expire anyway: the error that matters is the one that got us here.
      await lease.close().catch(() => {});
      throw err;
    }
  }

  // Resolves once `entry` (that incarnation of the key) is gone, or the stream ends.
  async waitDeleted(entry, deadline, name) {
    const deadlineMs = deadline === undefined ? undefined : deadline - Date.now();
    if (deadlineMs !== undefined && deadlineMs <= 0) throw lockTimeout(name);
    const watch = this.watchKey(entry.key, { deadlineMs });
    try {
      for (let item = await watch.next(); item !== null; item = await watch.next()) {
        if (item.type === 'snapshot') {
          const [current] = item.entries;
          if (current?.create_revision !== entry.create_revision) return;
        } else if (item.type === 'delete') {
          return;
        }
      }
    } catch (err) {
      if (err.code === grpc.status.DEADLINE_EXCEEDED && deadline !== undefined) {
        throw lockTimeout(name, err);
      }
      throw err;
    } finally {
      watch.cancel();
    }
  }
}

function streamOptions(deadlineMs) {
  return deadlineMs === undefined ? {} : { deadline: Date.now() + deadlineMs };
}

// The details of a failed call's google.rpc.Status whose type is `typeName` (e.g.
// 'google.rpc.ErrorInfo'), decoded as plain objects.
function statusDetails(err, typeName) {
  const [bytes] = err.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bytes) return [];
  const status = rpc.lookupType('google.rpc.Status').decode(bytes);
  const type = rpc.lookupType(typeName);
  return status.details
    .filter((any) => any.type_url.endsWith(`/${typeName}`))
    .map((any) => type.toObject(type.decode(any.value), { defaults: true }));
}

// The google.rpc.ErrorInfo detail of a failed call (REVISION_MISMATCH, REVISION_COMPACTED,
// STORE_MISMATCH, ...), or null when it has none.
function errorInfo(err) {
  return statusDetails(err, 'google.rpc.ErrorInfo')[0] ?? null;
}

function connect(target = DEFAULT_TARGET, options = {}) {
  return new Client(target, options);
}

module.exports = {
  connect,
  Client,
  Watch,
  Lease,
  Lock,
  compare,
  op,
  errorInfo,
  statusDetails,
  grpc,
  DEFAULT_TARGET,
};
