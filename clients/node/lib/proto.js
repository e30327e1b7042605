// Loads the contract, proto/jsonkv/v1/jsonkv.proto, at run time, so the client can never drift
// from it: from the copy bundled in the package when it was packed (`npm pack` runs
// tools/bundle-proto.js), or, run from the repository, from the repository's proto/. Also the
// google.rpc types that error details come in.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

const PROTO_FILE = path.join('jsonkv', 'v1', 'jsonkv.proto');

// The bundled copy first: beside an installed package, `../../proto` would be the user's own
// project folder, whose proto/ (if any) is not ours.
function protoRoot() {
  const candidates = [
    path.resolve(__dirname, '..', 'proto'),
    path.resolve(__dirname, '..', '..', '..', 'proto'),
  ];
  const found = candidates.find((dir) => fs.existsSync(path.join(dir, PROTO_FILE)));
  if (!found) {
    throw new Error(`jsonkv-client: no ${PROTO_FILE} in ${candidates.join(' or ')}`);
  }
  return found;
}

// Field names are the proto's (keepCase); int64 fields are decimal strings (longs: String).
// google/protobuf/struct.proto, which jsonkv.proto imports, comes bundled with protobufjs.
const definition = protoLoader.loadSync(PROTO_FILE, {
  includeDirs: [protoRoot()],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const { JsonKv } = grpc.loadPackageDefinition(definition).jsonkv.v1;

// google.rpc.Status and its details, to read a failed call's grpc-status-details-bin trailer.
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

module.exports = { JsonKv, rpc };
