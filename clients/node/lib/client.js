// The client: every call goes through call(), which tries the servers in turn (servers.js)
// and rejects with JsonKvError (errors.js). Watches, leases and locks come from watch.js and
// lease.js; requests and answers from requests.js.
'use strict';

const grpc = require('@grpc/grpc-js');
const { JsonKvError, fromServiceError } = require('./errors');
const { Lease, Lock, lockTimeout, lockKey, predecessor } = require('./lease');
const requests = require('./requests');
const { WatchResume } = require('./resume');
const {
  READ,
  WRITE,
  parseAddresses,
  bearerMetadata,
  channelCredentials,
  Servers,
  Attempts,
} = require('./servers');
const { Watch } = require('./watch');

const DEFAULT_TARGET = '127.0.0.1:50051';
// Every unary call gets a deadline by default, so no call can hang for ever.
const DEFAULT_TIMEOUT_MS = 10_000;

// What a watch watches, and the request that (re)opens it from a revision of a store: every
// time with the live query's filter, fields and diff (WatchPrefix only), so that a resumed watch
// is the same view.
function watchTarget(method, field, value, { prev_kv = false, filter, fields, diff }) {
  requests.checkKey(value, field);
  const query = {};
  if (method === 'WatchPrefix') {
    query.filter = requests.checkFilter(filter);
    query.fields = requests.checkFields(fields);
    query.diff = Boolean(diff);
  } else if (filter || fields?.length || diff) {
    throw new TypeError('filter, fields and diff are options of watchPrefix, not of watchKey');
  }
  return {
    method,
    request: (start_revision, store_id) => ({
      [field]: value,
      start_revision,
      store_id,
      prev_kv,
      value_encoding: 'VALUE_ENCODING_JSON',
      ...query,
    }),
  };
}

// A connection to jsonkv servers. `addresses` is 'host:port', 'http://host:port' or
// 'https://host:port' (TLS), or several (an array, or separated by commas): the client uses one
// at a time and moves to the next when it cannot answer. Options: `timeoutMs` bounds every call
// over all the servers it tries (null: no limit); `token` is sent as `authorization: Bearer
// TOKEN`; for https:// addresses `ca` is the CA to trust instead of the system's roots, `cert`
// and `key` the client certificate for mutual TLS, each a PEM Buffer or a file path. Calls
// return promises and reject with JsonKvError; bad arguments throw TypeError or RangeError.
// Nothing connects until the first call.
class Client {
  constructor(addresses = DEFAULT_TARGET, options = {}) {
    const { timeoutMs = DEFAULT_TIMEOUT_MS, token, ca, cert, key } = options;
    const parsed = parseAddresses(addresses);
    const credentialsOf = channelCredentials(parsed, { ca, cert, key });
    this.metadata = bearerMetadata(token);
    this.servers = new Servers(parsed, credentialsOf);
    this.timeoutMs = timeoutMs === null || timeoutMs === Infinity ? undefined : timeoutMs;
  }

  // The generated client of the server in use, for whatever the helpers leave out.
  get stub() {
    return this.servers.stubs[this.servers.current];
  }

  // The address of the server in use.
  get address() {
    return this.servers.addresses[this.servers.current].text;
  }

  close() {
    this.servers.close();
  }

  // One unary call of `kind` (READ or WRITE), through the servers in turn.
  async call(kind, method, request, timeoutMs = this.timeoutMs) {
    const attempts = new Attempts(this.servers, kind, timeoutMs);
    for (;;) {
      const { index, deadline } = attempts.next();
      try {
        return await new Promise((resolve, reject) => {
          this.servers.stubs[index][method](request, this.metadata, { deadline }, (err, response) =>
            err ? reject(err) : resolve(response),
          );
        });
      } catch (err) {
        const error = fromServiceError(err);
        if (!(error instanceof JsonKvError) || !attempts.tryAnother(index, err, error.reason)) {
          throw error;
        }
      }
    }
  }

  // Any unary method by its proto name, sent once to the server in use (or the next, if it
  // could not be reached): `await kv.unary('List', { prefix, page_size: 2 })`.
  unary(method, request, timeoutMs = this.timeoutMs) {
    return this.call(WRITE, method, request, timeoutMs);
  }

  // The key's entry; rejects with NOT_FOUND if it is absent.
  async get(key) {
    const response = await this.call(READ, 'Get', requests.getRequest(key));
    return requests.toEntry(response.kv);
  }

  // Stores JSON.stringify(value). Resolves to the response: `revision` is the key's new mod
  // revision (decimal strings, as every int64).
  insert(key, value, options = {}) {
    const json = JSON.stringify(value);
    if (json === undefined) throw new TypeError(`${String(value)} is not a JSON value`);
    return this.insertJson(key, json, options);
  }

  // Stores JSON text as written: numbers of any size survive exactly.
  // `expected_mod_revision` (number, decimal string or BigInt): only if the key's mod revision is
  // that (0: only if absent; else FAILED_PRECONDITION, REVISION_MISMATCH). `lease` (an id):
  // attaches the key to that live lease (NOT_FOUND, and nothing written, if it is not live); 0
  // or none detaches it from any.
  async insertJson(key, json, options = {}) {
    return this.call(WRITE, 'Insert', requests.insertRequest(key, json, options));
  }

  // Deletes the key (NOT_FOUND if absent, unless `allow_missing`); with
  // `expected_mod_revision`, only if its mod revision is that.
  delete(key, options = {}) {
    return this.call(WRITE, 'Delete', requests.deleteRequest(key, options));
  }

  // Changes the key's document on the server, atomically, and resolves to the key after it (its
  // `mod_revision` is the patch's revision). Give exactly one of:
  // - `merge`: an RFC 7396 merge patch ({ a: { b: 1 }, c: null } sets a.b, removes c), sent as
  //   JSON.stringify(merge); `merge_json`: the same as JSON text, sent as written (lossless).
  //   On an absent key it creates the key, applied to null.
  // - `json_patch`: an RFC 6902 JSON Patch, an array of operations (add, remove, replace, move,
  //   copy, test) applied in order, all or none, or its JSON text. NOT_FOUND on an absent key; a
  //   `test` that fails or a path that does not exist is FAILED_PRECONDITION (reason
  //   PATCH_TEST_FAILED or PATCH_PATH_NOT_FOUND, with the `operation` index and `path`).
  // With `expected_mod_revision`, only if the key's mod revision is that (else
  // FAILED_PRECONDITION, REVISION_MISMATCH). `lease` attaches the key to that live lease; 0 or
  // none keeps the lease it has. A malformed patch is INVALID_ARGUMENT. Nothing is changed on any
  // error.
  async patch(key, patch) {
    const response = await this.call(WRITE, 'Patch', requests.patchRequest(key, patch));
    return requests.toEntry(response.kv);
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
  // that fails rejects the call with its error and changes nothing. A branch writes each key at
  // most once (INVALID_ARGUMENT otherwise).
  async txn(txn = {}) {
    const response = await this.call(WRITE, 'Txn', requests.txnRequest(txn));
    return {
      succeeded: response.succeeded,
      revision: response.revision,
      results: response.results.map(requests.opResult),
    };
  }

  // Every key under `prefix` in key order, fetching a page at a time. With `min_revision`, each
  // page is read once the server has applied that revision.
  //
  // A live query: with `filter`, a CEL expression over the document `value` and its `key`
  // ('value.status == "open" && value.total > 100'), only the documents it matches; with
  // `fields`, RFC 6901 JSON Pointers (['/status', '/customer/name']), each value holds only those
  // members, at their paths. A bad filter or pointer rejects with INVALID_ARGUMENT, its message
  // naming where ('invalid filter: 1:10: ...'). A filtered page may hold few keys, or none: the
  // listing goes on until the server says it is complete.
  async list(prefix = '', options = {}) {
    const entries = [];
    let token = '';
    do {
      const response = await this.call(READ, 'List', requests.listRequest(prefix, options, token));
      entries.push(...response.kvs.map(requests.toEntry));
      token = response.next_page_token;
    } while (token);
    return entries;
  }

  // The server's status: revision, keys, store_id, backend, version, and more.
  status() {
    return this.call(READ, 'Status', {});
  }

  // Watches one key (see Watch): a snapshot, then every change, resuming by itself. Options:
  // `deadlineMs` bounds the whole watch; `start_revision` replays the changes from that revision
  // instead of a snapshot; to resume an earlier watch pass its `resumeRevision` as
  // start_revision, its `storeId` as store_id and its `resumeSeenKeys` as seen_keys. With
  // `prev_kv`, each event carries the key as it was before the change (`prevEntry`).
  watchKey(key, options = {}) {
    return this.watch(watchTarget('WatchKey', 'key', key, options), options);
  }

  // Watches every key under `prefix`; the options are as in watchKey(), and three more make it
  // a live query. With `filter` (as in list()) the watch is a view of the matching documents: the
  // snapshot holds only matches; a document that starts to match, or changes while it matches,
  // comes as a put; one that stops matching, or is deleted while it matched, as a delete; a
  // change to a document that matches neither before nor after sends nothing. Each event's
  // `viewChange` says which: 'entered', 'updated' or 'left'. `fields` (as in list()) applies to
  // every value sent, `prevEntry` included. With `diff`, a put of a document that existed before
  // carries `mergePatch`, the RFC 7396 merge patch from its previous version (and
  // `mergePatchJson`, its exact text). A resumed watch (by itself, or from `resumeRevision`) is
  // the same view: nothing missed or repeated. A bad filter or pointer rejects the first next()
  // with INVALID_ARGUMENT.
  watchPrefix(prefix, options = {}) {
    return this.watch(watchTarget('WatchPrefix', 'prefix', prefix, options), options);
  }

  watch(target, { start_revision = 0, store_id = '', seen_keys = [], deadlineMs } = {}) {
    const resume = new WatchResume(start_revision, store_id, seen_keys);
    return new Watch(this, target, resume, deadlineMs);
  }

  // Grants a lease of `ttlSeconds` (1 to 31536000, else INVALID_ARGUMENT), with `id` if given
  // (ALREADY_EXISTS if that lease is live), else one the server picks. Resolves to the response:
  // its `id` and the `ttl_seconds` granted (decimal strings). Nothing keeps it alive: see lease().
  async leaseGrant(ttlSeconds, { id = 0 } = {}) {
    const request = {
      ttl_seconds: requests.int64(ttlSeconds, 'ttl'),
      id: requests.int64(id, 'id'),
    };
    return this.call(WRITE, 'LeaseGrant', request);
  }

  // Restarts the lease's TTL, once; resolves to the TTL (a decimal string). NOT_FOUND if it is
  // not live.
  async leaseKeepAlive(id, { timeoutMs = this.timeoutMs } = {}) {
    const request = { id: requests.int64(id, 'id') };
    return (await this.call(READ, 'LeaseKeepAlive', request, timeoutMs)).ttl_seconds;
  }

  // Ends the lease now, deleting every key attached to it at one revision, which it resolves to.
  // NOT_FOUND if it is not live.
  async leaseRevoke(id) {
    return (await this.call(WRITE, 'LeaseRevoke', { id: requests.int64(id, 'id') })).revision;
  }

  // Resolves to the response: the lease's `ttl_seconds` left (rounded up), its
  // `granted_ttl_seconds` and, with `keys`, the `keys` attached to it in key order. NOT_FOUND if
  // it is not live.
  async leaseTimeToLive(id, { keys = false } = {}) {
    return this.call(READ, 'LeaseTimeToLive', { id: requests.int64(id, 'id'), keys });
  }

  // The ids of every live lease, in order.
  async leaseList() {
    return (await this.call(READ, 'LeaseList', {})).ids;
  }

  // Grants a lease (as leaseGrant()) and keeps it alive until `await lease.close()`:
  // `const lease = await client.lease(10); await client.insert(key, value, { lease: lease.id })`.
  async lease(ttlSeconds, { id } = {}) {
    const granted = await this.leaseGrant(ttlSeconds, { id });
    return new Lease(this, granted.id, Number(granted.ttl_seconds));
  }

  // Resolves once this client holds the lock `name`, to a Lock: `const lock = await
  // client.lock('jobs/nightly', { ttl: 10, timeoutMs: 30_000 }); try { ... } finally { await
  // lock.release(); }`. Rejects with DEADLINE_EXCEEDED if `timeoutMs` (none: no limit) passes
  // first. As etcd's concurrency.Mutex: a lease of `ttl` seconds (default 60, kept alive while
  // held) owns the key `<name>/<lease id in hex>`; the holder is the key under `<name>/` with the
  // lowest create revision; every other waiter watches the key created just before its own until
  // that is deleted, so waiters get the lock in the order they asked and a release wakes only the
  // next. A holder that dies without releasing holds the lock until its lease expires.
  async lock(name, { ttl = 60, timeoutMs } = {}) {
    const deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    lockKey(name, 0); // a bad name fails before a lease is granted
    const lease = await this.lease(ttl);
    try {
      const { prefix, key } = lockKey(name, lease.id);
      const created = await this.insert(key, null, { expected_mod_revision: 0, lease: lease.id });
      const mine = BigInt(created.create_revision);
      for (;;) {
        // Each page is read once the server has our key: none created before it hides.
        const waiters = await this.list(prefix, { min_revision: created.create_revision });
        const before = predecessor(waiters, prefix, key, mine, name);
        if (before === null) return new Lock(name, key, lease, created.create_revision);
        await this.waitDeleted(before, deadline, name);
      }
    } catch (err) {
      // The lease would expire anyway: the error that matters is the one that got us here.
      await lease.close().catch(() => {});
      throw err;
    }
  }

  // Resolves once `entry` (that incarnation of the key) is gone.
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
        throw lockTimeout(name);
      }
      throw err;
    } finally {
      watch.cancel();
    }
  }
}

// A Client (see there for the arguments); close() it when done.
function connect(addresses = DEFAULT_TARGET, options = {}) {
  return new Client(addresses, options);
}

module.exports = { Client, connect, DEFAULT_TARGET, DEFAULT_TIMEOUT_MS, READ, WRITE };
