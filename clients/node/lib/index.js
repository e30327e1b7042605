// jsonkv-client: the Node client of jsonkv, a JSON key-value database served over gRPC
// (service jsonkv.v1.JsonKv; the proto bundled in this package is the contract).
//
// Values travel as JSON text (`value_json`, answers asked for as VALUE_ENCODING_JSON), the
// contract's lossless path. JSON.parse rounds integers beyond 2^53, so every entry carries the
// exact text as `json` beside the parsed `value`, and insertJson() stores text as written.
// Field names are the proto's, int64 fields decimal strings. Types: ../index.d.ts.
//
// Layout:
// - client.js: Client and connect(); every call, with failover between servers.
// - watch.js: Watch, which resumes itself when its stream breaks.
// - resume.js: where a watch stands, so that a resume has no gap and no repeat.
// - lease.js: Lease (kept alive from a timer) and Lock (etcd's recipe).
// - requests.js: requests, entries, transaction operations (op.*) and conditions (compare()).
// - servers.js: addresses, TLS and token settings, which server a call goes to, backoff.
// - errors.js: JsonKvError, built from a failed call, and its details.
// - proto.js: loads the proto, bundled or the repository's, and the google.rpc types.
'use strict';

const grpc = require('@grpc/grpc-js');
const { Client, connect, DEFAULT_TARGET, DEFAULT_TIMEOUT_MS } = require('./client');
const { JsonKvError, errorInfo, statusDetails } = require('./errors');
const { Lease, Lock } = require('./lease');
const { compare, op } = require('./requests');
const { WatchResume } = require('./resume');
const { Watch, STORE_ID_HEADER } = require('./watch');

module.exports = {
  connect,
  Client,
  Watch,
  WatchResume,
  Lease,
  Lock,
  JsonKvError,
  compare,
  op,
  errorInfo,
  statusDetails,
  grpc,
  status: grpc.status,
  DEFAULT_TARGET,
  DEFAULT_TIMEOUT_MS,
  STORE_ID_HEADER,
};
