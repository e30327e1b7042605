// The errors the client rejects with: JsonKvError, which carries the gRPC status code (a
// number, as grpc.status), its name, the server's message and the structured details
// (google.rpc ErrorInfo and BadRequest), built from a failed call in one place.
'use strict';

const grpc = require('@grpc/grpc-js');
const { rpc } = require('./proto');

const CODE_NAMES = Object.fromEntries(Object.entries(grpc.status).map(([name, n]) => [n, name]));

// The details of a failed call's google.rpc.Status whose type is `typeName` (e.g.
// 'google.rpc.ErrorInfo'), decoded as plain objects.
function statusDetails(err, typeName) {
  const [bytes] = err?.metadata?.get?.('grpc-status-details-bin') ?? [];
  if (!bytes) return [];
  const status = rpc.lookupType('google.rpc.Status').decode(bytes);
  const type = rpc.lookupType(typeName);
  return status.details
    .filter((any) => any.type_url.endsWith(`/${typeName}`))
    .map((any) => type.toObject(type.decode(any.value), { defaults: true }));
}

// A call that failed. `code` is its grpc.status number and `codeName` its name ('NOT_FOUND'),
// `details` the server's message, `info` the ErrorInfo detail ({ reason, domain, metadata }, or
// null), `fieldViolations` the request fields refused ([{ field, description }]), `metadata`
// the call's trailers. `cause` is grpc-js's own error.
class JsonKvError extends Error {
  constructor(details, { code = grpc.status.UNKNOWN, metadata, cause } = {}) {
    const info = statusDetails({ metadata }, 'google.rpc.ErrorInfo')[0] ?? null;
    const reason = info ? ` (${info.reason})` : '';
    super(`${CODE_NAMES[code] ?? code}${reason}: ${details}`, cause ? { cause } : undefined);
    this.name = 'JsonKvError';
    this.code = code;
    this.codeName = CODE_NAMES[code] ?? String(code);
    this.details = details;
    this.metadata = metadata ?? new grpc.Metadata();
    this.info = info;
    this.fieldViolations = statusDetails({ metadata }, 'google.rpc.BadRequest').flatMap(
      (bad) => bad.field_violations,
    );
  }

  // `info.reason`, or null when the error has no ErrorInfo.
  get reason() {
    return this.info?.reason ?? null;
  }
}

// The JsonKvError for a grpc-js ServiceError (or the error itself, if it is one already).
function fromServiceError(err) {
  if (err instanceof JsonKvError) return err;
  if (typeof err?.code !== 'number') return err; // not a call's error: pass it on as it is
  return new JsonKvError(err.details ?? err.message, {
    code: err.code,
    metadata: err.metadata,
    cause: err,
  });
}

// The google.rpc.ErrorInfo detail of a failed call (REVISION_MISMATCH, REVISION_COMPACTED,
// STORE_MISMATCH, ...), or null when it has none.
function errorInfo(err) {
  if (err instanceof JsonKvError) return err.info;
  return statusDetails(err, 'google.rpc.ErrorInfo')[0] ?? null;
}

module.exports = { JsonKvError, fromServiceError, errorInfo, statusDetails };
