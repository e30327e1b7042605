// The servers a client talks to: the address list, the TLS and token settings every server
// gets, which server is in use, and when a failed call moves on to the next (failover) or a
// broken watch is opened again.
//
// A client uses one server at a time, the first in the list, and moves to the next when that
// one cannot answer: a read after any failure of the server, a write only when its connection
// could not be made, since a write whose answer was lost may have been applied and must not be
// sent twice. Staying on one server also keeps successive reads on one view of the keyspace.
'use strict';

const fs = require('node:fs');
const grpc = require('@grpc/grpc-js');
const { JsonKv } = require('./proto');

// Pings on an idle connection, so that a watch on a server that vanished without closing the
// connection (host down, network cut) fails and resumes elsewhere instead of waiting for ever.
const CHANNEL_OPTIONS = {
  'grpc.keepalive_time_ms': 20_000,
  'grpc.keepalive_timeout_ms': 10_000,
  'grpc.keepalive_permit_without_calls': 1,
  // The server's own default limit (--max-message-bytes): a large snapshot fits.
  'grpc.max_receive_message_length': 16 * 1024 * 1024,
};

// What grpc-js says when a call failed because no connection could be made: it never left.
const NEVER_SENT = 'No connection established';

// `host:port`, `http://host:port` or `https://host:port` (TLS); several separated by commas,
// or an array. Each becomes { target: 'host:port', tls }.
function parseAddresses(addresses) {
  const items = typeof addresses === 'string' ? addresses.split(',') : [...(addresses ?? [])];
  if (items.length === 0) items.push('');
  return items.map((item) => {
    const text = typeof item === 'string' ? item.trim() : '';
    if (!text) {
      throw new TypeError(
        `bad server address list ${JSON.stringify(addresses)}: give one or more addresses ` +
          'separated by commas, none of them empty',
      );
    }
    const match = /^(?:(\w+):\/\/)?([^/]+)$/.exec(text);
    const scheme = match?.[1] ?? 'http';
    if (!match || !['http', 'https'].includes(scheme)) {
      throw new TypeError(
        `bad server address ${text}: give host:port, http://host:port or https://host:port`,
      );
    }
    return { target: match[2], tls: scheme === 'https', text: `${scheme}://${match[2]}` };
  });
}

// PEM as a Buffer as given, or read from the file a string names.
function readPem(source, what) {
  if (Buffer.isBuffer(source)) return source;
  try {
    return fs.readFileSync(source);
  } catch (err) {
    throw new TypeError(`cannot read the ${what} file ${source}: ${err.message}`);
  }
}

// The `authorization: Bearer TOKEN` header every call carries, if there is a token.
function bearerMetadata(token) {
  const metadata = new grpc.Metadata();
  if (token === undefined || token === null) return metadata;
  if (typeof token !== 'string' || !/^[\x21-\x7e]+$/.test(token)) {
    throw new TypeError('a token is a non-empty string without spaces or control characters');
  }
  metadata.set('authorization', `Bearer ${token}`);
  return metadata;
}

// The credentials of https:// addresses from `ca`, `cert` and `key` (each a PEM Buffer or a
// file path), validated once when the client is made.
function channelCredentials(addresses, { ca, cert, key }) {
  if ((cert === undefined) !== (key === undefined)) {
    throw new TypeError('a client certificate needs its key: give both cert and key');
  }
  if (ca !== undefined || cert !== undefined) {
    const plain = addresses.find((a) => !a.tls);
    if (plain) {
      throw new TypeError(
        `a CA or client certificate was given, but ${plain.text} is not an https:// address`,
      );
    }
  }
  const tls = addresses.some((a) => a.tls)
    ? grpc.credentials.createSsl(
        ca === undefined ? null : readPem(ca, 'CA'),
        key === undefined ? null : readPem(key, 'client key'),
        cert === undefined ? null : readPem(cert, 'client certificate'),
      )
    : null;
  return (address) => (address.tls ? tls : grpc.credentials.createInsecure());
}

// What a call may do to the keyspace, which decides when it may go to another server.
// READ: get, list, opening a watch, keep-alive: changes nothing, so after any failure of the
// server the next one is asked. WRITE: a server may have applied it even if its answer was
// lost, so it goes to another server only when it never left.
const READ = 'read';
const WRITE = 'write';

function neverSent(err) {
  return err.code === grpc.status.UNAVAILABLE && String(err.details ?? '').startsWith(NEVER_SENT);
}

// Whether a failed call is worth making again, on this server or the next: the server went
// away, the connection broke, or no answer came in time. Not an UNAVAILABLE saying the server
// has not reached the revision asked for: every server was already asked.
function isRetryable(err, reason) {
  switch (err.code) {
    case grpc.status.UNAVAILABLE:
      return reason !== 'REVISION_NOT_REACHED';
    case grpc.status.UNKNOWN:
    case grpc.status.ABORTED:
    case grpc.status.CANCELLED:
    case grpc.status.DEADLINE_EXCEEDED:
      return true;
    default:
      return false;
  }
}

// One generated client per server, in the order given, and which one is in use.
class Servers {
  constructor(addresses, credentialsOf) {
    this.addresses = addresses;
    this.stubs = addresses.map(
      (address) => new JsonKv(address.target, credentialsOf(address), CHANNEL_OPTIONS),
    );
    this.current = 0;
  }

  // Makes the server after `index` the one in use, unless another call has moved on from it
  // already: concurrent failures of one server must not skip the next.
  movePast(index) {
    if (this.current === index) this.current = (index + 1) % this.stubs.length;
  }

  close() {
    for (const stub of this.stubs) stub.close();
  }
}

// The tries of one call: each server at most once, starting with the one in use, all within
// `timeoutMs` (undefined: no limit).
class Attempts {
  constructor(servers, kind, timeoutMs) {
    this.servers = servers;
    this.kind = kind;
    this.deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    this.left = servers.stubs.length;
  }

  // The server to try next, and the deadline of the try (Infinity: none).
  next() {
    this.left -= 1;
    return { index: this.servers.current, deadline: this.deadline ?? Infinity };
  }

  // Whether to try the next server after `err` on the server `index`. A server that did not
  // answer in the call's time is left like one that is down: a hung process keeps its
  // connection open, so keepalive alone would not notice.
  tryAnother(index, err, reason) {
    const outOfTime = this.deadline !== undefined && Date.now() >= this.deadline;
    if (outOfTime && err.code === grpc.status.DEADLINE_EXCEEDED) {
      this.servers.movePast(index);
      return false;
    }
    const may = neverSent(err) || (this.kind === READ && isRetryable(err, reason));
    if (this.left > 0 && !outOfTime && may) {
      this.servers.movePast(index);
      return true;
    }
    return false;
  }
}

// Exponential delays between a watch's reconnects, from 100 ms to 2 s, jittered so that the
// watchers of one restarted server do not all come back in the same instant.
class Backoff {
  constructor() {
    this.reset();
  }

  nextDelayMs() {
    const delay = this.stepMs * (0.5 + Math.random() / 2);
    this.stepMs = Math.min(this.stepMs * 2, 2_000);
    return delay;
  }

  reset() {
    this.stepMs = 100;
  }
}

module.exports = {
  READ,
  WRITE,
  parseAddresses,
  bearerMetadata,
  channelCredentials,
  isRetryable,
  Servers,
  Attempts,
  Backoff,
};
