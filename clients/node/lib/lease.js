// Leases kept alive from a timer, and locks built on them the way etcd's concurrency package
// builds them (the Python client's locks are the same keys: the two interoperate).
'use strict';

const grpc = require('@grpc/grpc-js');
const { JsonKvError } = require('./errors');

// A granted lease that a timer keeps alive, calling LeaseKeepAlive every third of its TTL, until
// close() stops it and revokes the lease, deleting the keys attached to it. Get one from
// client.lease(). `id` is a decimal string, `ttlSeconds` the TTL granted (a number).
// A keep-alive that fails for a passing reason (a server down, a deadline) is tried again at the
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
    const timeoutMs = Math.min(this.client.timeoutMs ?? Infinity, this.periodMs);
    const again = () => {
      if (!this.closed) this.schedule(start);
    };
    this.inflight = this.client.leaseKeepAlive(this.id, { timeoutMs }).then(again, (err) => {
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

// What client.lock() rejects with when its `timeoutMs` passes first.
function lockTimeout(name) {
  return new JsonKvError(`lock ${name}: not acquired in time`, {
    code: grpc.status.DEADLINE_EXCEEDED,
  });
}

// The prefix of the lock's waiters and the key of the waiter holding lease `leaseId`.
function lockKey(name, leaseId) {
  if (typeof name !== 'string' || !name) {
    throw new TypeError(`a lock name is a non-empty string, not ${JSON.stringify(name)}`);
  }
  const prefix = `${name}/`;
  return { prefix, key: `${prefix}${BigInt(leaseId).toString(16)}` };
}

// The waiter just before ours (`key`, created at revision `mine`, a BigInt) among the entries
// listed under `prefix`, or null when ours is first: we hold the lock. Keys of another lock
// named under `<name>/` (a deeper path) do not count.
function predecessor(entries, prefix, key, mine, name) {
  const waiters = entries.filter((entry) => !entry.key.slice(prefix.length).includes('/'));
  if (!waiters.some((entry) => entry.key === key)) {
    throw new Error(`lock ${name}: ${key} was deleted while waiting`);
  }
  const before = waiters.filter((entry) => BigInt(entry.create_revision) < mine);
  if (before.length === 0) return null;
  return before.reduce((a, b) => (BigInt(b.create_revision) > BigInt(a.create_revision) ? b : a));
}

module.exports = { Lease, Lock, lockTimeout, lockKey, predecessor };
