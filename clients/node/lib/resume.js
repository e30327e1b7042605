// Where a watch stands, so that it can be resumed with nothing missed and nothing repeated:
// the state every message of a watch's streams goes through.
//
// The resume rule (the Rust and Python clients' too; see docs/clients.md): the watermark is the
// highest revision up to which the caller has everything, the maximum of the snapshot's
// revision, the last event's and the last progress notice's. A broken stream is opened again
// with start_revision = watermark + 1 and the store those revisions belong to, so the server
// replays from there, or refuses (FAILED_PRECONDITION) if it serves another store. A change of
// several keys at one revision comes as events marked more_at_revision but the last: while one
// is only partly delivered, the resume starts at that revision and skips the keys already
// delivered. Until the snapshot is complete there is no watermark, and a resume asks for a
// snapshot again. Revisions are BigInts here.
'use strict';

const grpc = require('@grpc/grpc-js');
const { JsonKvError } = require('./errors');
const { toEntry, toEntryOrNull } = require('./requests');

const EVENT_TYPES = { EVENT_TYPE_PUT: 'put', EVENT_TYPE_DELETE: 'delete' };
const CAUSES = { CAUSE_EXPIRED: 'expired', CAUSE_REVOKED: 'revoked' };
const VIEW_CHANGES = {
  VIEW_CHANGE_ENTERED: 'entered',
  VIEW_CHANGE_UPDATED: 'updated',
  VIEW_CHANGE_LEFT: 'left',
};

function protocolError(message) {
  return new JsonKvError(`protocol error: ${message}`, { code: grpc.status.INTERNAL });
}

class WatchResume {
  // Starts at `startRevision` (0: with a snapshot) of the store `storeId` names (if known),
  // skipping the events of `startRevision` whose keys are in `seenKeys`.
  constructor(startRevision = 0, storeId = '', seenKeys = []) {
    const start = BigInt(startRevision);
    if (start < 0n) throw new RangeError(`start_revision is 0 (a snapshot) or more, not ${start}`);
    this.watermark = start > 0n ? start - 1n : null;
    const seen = new Set(seenKeys);
    // A revision after the watermark partly delivered, and the keys delivered at it.
    this.partial = seen.size > 0 && start > 0n ? { revision: start, keys: seen } : null;
    this.snapshotParts = null;
    this.storeId = storeId;
  }

  // The start_revision that resumes after everything delivered (0n: a snapshot).
  get startRevision() {
    if (this.partial) return this.partial.revision;
    return this.watermark === null ? 0n : this.watermark + 1n;
  }

  // The keys already delivered of `startRevision`, if it was cut short.
  get seenKeys() {
    return new Set(this.partial?.keys ?? []);
  }

  // The store_id to send: none while a snapshot is awaited, since any store can give one.
  get requestStoreId() {
    return this.watermark === null ? '' : this.storeId;
  }

  // A stream opened on a server of `storeId` ('': one too old to say). Before the snapshot the
  // stream's store becomes the watch's; after it, the server accepted the one sent, so another
  // store is a broken contract.
  opened(storeId) {
    if (!storeId) return;
    if (this.watermark !== null && this.storeId && storeId !== this.storeId) {
      throw protocolError(
        `resumed a watch of store ${this.storeId} on a server of store ${storeId}`,
      );
    }
    this.storeId = storeId;
  }

  // The stream broke: a snapshot cut short must be read again whole.
  disconnected() {
    this.snapshotParts = null;
  }

  // What the caller should see of `msg` (a decoded WatchResponse), or null.
  receive(msg) {
    if (msg.response === 'snapshot') return this.snapshot(msg.snapshot);
    if (msg.response === 'event') return this.event(msg.event);
    if (msg.response === 'progress') {
      // Before the snapshot is complete a progress notice promises nothing kept here.
      if (this.watermark !== null) {
        const revision = BigInt(msg.progress.revision);
        if (revision > this.watermark) this.watermark = revision;
        if (this.partial && this.partial.revision <= this.watermark) this.partial = null;
      }
      return null;
    }
    throw protocolError('empty watch message');
  }

  snapshot(snapshot) {
    if (this.watermark !== null) {
      throw protocolError(
        `unexpected snapshot at revision ${snapshot.revision} on a resumed watch`,
      );
    }
    let entries = [];
    if (this.snapshotParts) {
      if (this.snapshotParts.revision !== snapshot.revision) {
        throw protocolError(
          `snapshot messages at revisions ${this.snapshotParts.revision} and ${snapshot.revision}`,
        );
      }
      entries = this.snapshotParts.entries;
    }
    entries.push(...snapshot.kvs.map(toEntry));
    if (!snapshot.last) {
      this.snapshotParts = { revision: snapshot.revision, entries };
      return null;
    }
    this.snapshotParts = null;
    this.watermark = BigInt(snapshot.revision);
    return { type: 'snapshot', revision: snapshot.revision, entries };
  }

  event(event) {
    if (this.watermark === null) {
      throw protocolError(`event at revision ${event.revision} before the snapshot ended`);
    }
    const revision = BigInt(event.revision);
    // Delivered before a reconnect, or covered by a progress notice.
    if (revision <= this.watermark) return null;
    const key = event.kv?.key ?? '';
    // Part of a revision delivered before a reconnect.
    if (this.partial?.revision === revision && this.partial.keys.has(key)) return null;
    const type = EVENT_TYPES[event.type];
    if (!type) throw protocolError(`event at revision ${event.revision} of type ${event.type}`);
    if (event.more_at_revision) {
      // Everything before this revision is complete; this one is not yet.
      if (revision - 1n > this.watermark) this.watermark = revision - 1n;
      if (this.partial?.revision === revision) this.partial.keys.add(key);
      else this.partial = { revision, keys: new Set([key]) };
    } else {
      this.watermark = revision;
      this.partial = null;
    }
    return {
      type,
      revision: event.revision,
      entry: toEntry(event.kv),
      lease: event.lease,
      cause: CAUSES[event.cause] ?? null,
      prevEntry: toEntryOrNull(event.prev_kv),
      viewChange: VIEW_CHANGES[event.view_change] ?? null,
      // Asked for as VALUE_ENCODING_JSON, the patch comes as text; '' is no patch.
      mergePatch: event.merge_patch_json ? JSON.parse(event.merge_patch_json) : null,
      mergePatchJson: event.merge_patch_json || null,
    };
  }
}

module.exports = { WatchResume };
