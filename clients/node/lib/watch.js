// A watch that resumes by itself: next() resolves to a snapshot, then to events, for as long as
// the watch runs, opening its stream again whenever it breaks.
'use strict';

const { setTimeout: sleep } = require('node:timers/promises');
const grpc = require('@grpc/grpc-js');
const { JsonKvError, fromServiceError } = require('./errors');
const { isRetryable, Backoff } = require('./servers');

// The response header of every watch stream that names the store its revisions belong to.
const STORE_ID_HEADER = 'jsonkv-store-id';

// One logical watch: next() resolves to a snapshot ({ type: 'snapshot', revision, entries }),
// unless the watch started from a revision, then to events ({ type: 'put' | 'delete', revision,
// entry, lease, cause, prevEntry, viewChange, mergePatch, mergePatchJson }): a delete that a
// lease's end caused names the `lease` and the `cause`, 'expired' or 'revoked'; any other event
// has `lease` '0' and `cause` null. `prevEntry` is the key just before the change on a watch
// asked for with `prev_kv`. On a filtered watch (a live query) `viewChange` is 'entered' (a put:
// the document matches now and did not before), 'updated' (a put: it matched and still does) or
// 'left' (a delete: deleted, or changed to no longer match; `entry` holds only the key and
// `mod_revision`); null on an unfiltered watch. With `diff`, `mergePatch` is the RFC 7396 merge
// patch from the document's previous version (parsed: JSON.parse rounds integers beyond 2^53, so
// `mergePatchJson` keeps its exact text); both null when there is none: a delete, a document
// that did not exist before, or a change a merge patch cannot express (a member set to null).
// A snapshot sent in several messages comes out as one; progress notices only move the resume
// point.
//
// When the stream breaks (the server went away, restarted or shut down; the connection broke)
// the watch opens it again by itself, on the next server if there are several, after a short
// backoff, from the revision after the last it delivered and naming the store those revisions
// belong to: nothing is missed or repeated. A live query's filter, fields and diff are asked for
// again, so the view goes on as it was. A server that cannot resume it that way ends it with
// an error: FAILED_PRECONDITION (STORE_MISMATCH, STORE_BEHIND) or OUT_OF_RANGE; start a new
// watch from a snapshot then. `deadlineMs` ends it with DEADLINE_EXCEEDED. next() rejects with
// that JsonKvError, and resolves to null once cancel() was called.
//
// To resume in a later process, keep `resumeRevision` (a BigInt), `storeId` and
// `resumeSeenKeys`, and pass them as start_revision, store_id and seen_keys (with the same
// filter, fields and diff, for the same view).
class Watch {
  constructor(client, target, resume, deadlineMs) {
    this.client = client;
    this.target = target;
    this.resume = resume;
    this.deadline = deadlineMs === undefined ? undefined : Date.now() + deadlineMs;
    this.backoff = new Backoff();
    this.cancelled = false;
    this.open();
  }

  get resumeRevision() {
    return this.resume.startRevision;
  }

  get resumeSeenKeys() {
    return this.resume.seenKeys;
  }

  // The store this watch's revisions belong to: the stream's jsonkv-store-id header, known
  // before the first item ('' until the stream has sent its headers).
  get storeId() {
    return this.resume.storeId || this.headerStore;
  }

  open() {
    if (this.deadline !== undefined && Date.now() >= this.deadline) {
      throw new JsonKvError("the watch's timeout ran out", {
        code: grpc.status.DEADLINE_EXCEEDED,
      });
    }
    const { servers, metadata } = this.client;
    this.server = servers.current;
    const request = this.target.request(
      this.resume.startRevision.toString(),
      this.resume.requestStoreId,
    );
    const options = this.deadline === undefined ? {} : { deadline: this.deadline };
    this.call = servers.stubs[this.server][this.target.method](request, metadata, options);
    this.headerStore = '';
    this.storeKnown = false;
    this.call.on('metadata', (headers) => {
      this.headerStore = String(headers.get(STORE_ID_HEADER)[0] ?? '');
    });
    this.messages = this.call[Symbol.asyncIterator]();
  }

  async next() {
    while (!this.cancelled) {
      let failure = null;
      try {
        for (;;) {
          const { value: msg, done } = await this.messages.next();
          if (done) break; // ended without an error: open it again
          if (!this.storeKnown) {
            this.resume.opened(this.headerStore);
            this.storeKnown = true;
          }
          this.backoff.reset();
          const item = this.resume.receive(msg);
          if (item) return item;
        }
      } catch (err) {
        if (err instanceof JsonKvError || typeof err?.code !== 'number') throw err;
        failure = err;
      }
      if (this.cancelled) break;
      this.resume.disconnected();
      if (failure) {
        const error = fromServiceError(failure);
        if (!isRetryable(failure, error.reason) || this.outOfTime(failure)) throw error;
      }
      this.client.servers.movePast(this.server);
      let delay = this.backoff.nextDelayMs();
      if (this.deadline !== undefined) {
        delay = Math.min(delay, Math.max(0, this.deadline - Date.now()));
      }
      await sleep(delay);
      this.open();
    }
    return null;
  }

  // Whether `failure` is the watch's own deadline running out, which ends it.
  outOfTime(failure) {
    return (
      failure.code === grpc.status.DEADLINE_EXCEEDED &&
      this.deadline !== undefined &&
      Date.now() >= this.deadline - 10
    );
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (let item = await this.next(); item !== null; item = await this.next()) yield item;
    } finally {
      this.cancel();
    }
  }

  // Ends the watch: a pending next() resolves to null, and so do later ones.
  cancel() {
    this.cancelled = true;
    this.call.cancel();
  }
}

module.exports = { Watch, STORE_ID_HEADER };
