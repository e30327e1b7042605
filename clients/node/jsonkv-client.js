// A thin Node client for jsonkv (service jsonkv.v1.JsonKv over gRPC), loading
// proto/jsonkv/v1/jsonkv.proto at run time, so it can never drift from the contract.
//
// Values travel as JSON text (`value_json`, responses asked for with VALUE_ENCODING_JSON), the
// contract's lossless path. JSON.parse rounds integers beyond 2^53, so every entry carries the
// exact text as `json` beside the parsed `value`, and insertJson() stores text as written.
// Field names are the proto's (keepCase), int64 fields are decimal strings (longs: String).
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

// A stored key: `json` is the exact JSON text, `value` the parsed value (null for a delete).
function toEntry(kv) {
  return {
    key: kv.key,
    json: kv.value_json,
    value: kv.value_json ? JSON.parse(kv.value_json) : null,
    create_revision: kv.create_revision,
    mod_revision: kv.mod_revision,
    version: kv.version,
  };
}

const EVENT_TYPES = { EVENT_TYPE_PUT: 'put', EVENT_TYPE_DELETE: 'delete' };

// One watch stream: next() resolves to a snapshot ({ type: 'snapshot', revision, entries }),
// unless the watch started from a revision, then to events ({ type: 'put' | 'delete', revision,
// entry }). A snapshot sent in several messages comes out as one. Progress notices are consumed
// here: they only advance `resumeRevision`, the start_revision that resumes after all seen so far.
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
        return { type, revision: msg.event.revision, entry: toEntry(msg.event.kv) };
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

  unary(method, request) {
    const deadline = Date.now() + this.timeoutMs;
    return new Promise((resolve, reject) => {
      this.stub[method](request, { deadline }, (err, response) =>
        err ? reject(err) : resolve(response),
      );
    });
  }

  async get(key) {
    const response = await this.unary('Get', { key, value_encoding: 'VALUE_ENCODING_JSON' });
    return toEntry(response.kv);
  }

  // Stores JSON.stringify(value). Returns the response: `revision` is the key's new mod revision.
  insert(key, value, options = {}) {
    return this.insertJson(key, JSON.stringify(value), options);
  }

  // Stores JSON text as written: numbers of any size survive exactly.
  // `expected_mod_revision` (number or decimal string): only if the key's mod revision is that
  // (0: only if absent).
  insertJson(key, json, { expected_mod_revision } = {}) {
    return this.unary('Insert', { key, value_json: json, expected_mod_revision });
  }

  delete(key, { expected_mod_revision, allow_missing = false } = {}) {
    return this.unary('Delete', { key, expected_mod_revision, allow_missing });
  }

  // Every key under `prefix` in key order, fetching a page at a time.
  async list(prefix = '', { page_size = 0 } = {}) {
    const entries = [];
    let page_token = '';
    do {
      const response = await this.unary('List', {
        prefix,
        page_size,
        page_token,
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
  // STORE_BEHIND) where resuming would skip changes, and repeats none it saw.
  watchKey(key, { start_revision = 0, store_id = '', seen_keys = [], deadlineMs } = {}) {
    const request = { key, start_revision, store_id, value_encoding: 'VALUE_ENCODING_JSON' };
    const call = this.stub.WatchKey(request, streamOptions(deadlineMs));
    return new Watch(call, start_revision, seen_keys);
  }

  // The options are as in watchKey().
  watchPrefix(prefix, { start_revision = 0, store_id = '', seen_keys = [], deadlineMs } = {}) {
    const request = { prefix, start_revision, store_id, value_encoding: 'VALUE_ENCODING_JSON' };
    const call = this.stub.WatchPrefix(request, streamOptions(deadlineMs));
    return new Watch(call, start_revision, seen_keys);
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

module.exports = { connect, Client, Watch, errorInfo, statusDetails, grpc, DEFAULT_TARGET };
