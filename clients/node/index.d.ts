// TypeScript definitions of jsonkv-client's public API (lib/index.js). int64 fields (revisions,
// versions, lease ids) arrive as decimal strings, exact at any size; they may be sent as
// numbers (safe integers only), decimal strings or BigInts.

import type * as grpcJs from '@grpc/grpc-js';

export type Int64 = number | string | bigint;
/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** PEM text as a Buffer, or the path of a PEM file. */
export type PemSource = Buffer | string;

export interface ClientOptions {
  /** Bounds every call over all the servers it tries; null for no limit. Default 10000. */
  timeoutMs?: number | null;
  /** Sent as `authorization: Bearer TOKEN` with every call. */
  token?: string;
  /** The CA to trust for https:// addresses, instead of the system's roots. */
  ca?: PemSource;
  /** The client certificate and its key, for servers that require mutual TLS. */
  cert?: PemSource;
  key?: PemSource;
}

/** A stored key: `json` is the exact JSON text, `value` the parsed value (null for a delete). */
export interface Entry<T = Json> {
  key: string;
  json: string;
  value: T;
  create_revision: string;
  mod_revision: string;
  version: string;
  /** The lease the key is attached to, '0' if none. */
  lease: string;
}

export interface Snapshot {
  type: 'snapshot';
  revision: string;
  entries: Entry[];
}

export interface WatchEvent {
  type: 'put' | 'delete';
  revision: string;
  entry: Entry;
  /** The lease whose end deleted the key, '0' for any other event. */
  lease: string;
  cause: 'expired' | 'revoked' | null;
  /** The key before the change, on a watch asked for with `prev_kv`. */
  prevEntry: Entry | null;
  /**
   * On a filtered watch (a live query), how the event changes the view of matching documents:
   * 'entered' (a put: it matches now and did not before), 'updated' (a put: it matched and still
   * does) or 'left' (a delete: deleted, or changed to no longer match). Null when unfiltered.
   */
  viewChange: ViewChange | null;
  /**
   * With `diff`: the RFC 7396 merge patch from the document's previous version to this one.
   * Null when there is none (a delete, a new document, a member set to null).
   */
  mergePatch: Json | null;
  /** The exact JSON text of `mergePatch` (JSON.parse rounds integers beyond 2^53), or null. */
  mergePatchJson: string | null;
}

export type ViewChange = 'entered' | 'updated' | 'left';

export type WatchItem = Snapshot | WatchEvent;

export interface InsertResponse {
  revision: string;
  create_revision: string;
  version: string;
  previous: unknown;
}

export interface DeleteResponse {
  revision: string;
  deleted: boolean;
  previous: unknown;
}

export interface LeaseGrantResponse {
  id: string;
  ttl_seconds: string;
}

export interface LeaseTimeToLiveResponse {
  id: string;
  ttl_seconds: string;
  granted_ttl_seconds: string;
  keys: string[];
}

export interface StatusResponse {
  revision: string;
  keys: string;
  store_id: string;
  backend: string;
  version: string;
  [field: string]: unknown;
}

export interface WriteOptions {
  /** Only if the key's mod revision is this (0: only if absent). */
  expected_mod_revision?: Int64;
  /** Attach the key to this live lease; 0 detaches it (for a patch: keeps its lease). */
  lease?: Int64;
}

export interface DeleteOptions {
  expected_mod_revision?: Int64;
  /** Succeed on an absent key, with `deleted` false. */
  allow_missing?: boolean;
}

/** Exactly one of `merge`, `merge_json` and `json_patch`. */
export interface PatchOptions extends WriteOptions {
  merge?: Json;
  merge_json?: string;
  json_patch?: Array<{ op: string; path: string; [field: string]: unknown }> | string;
}

export interface ListOptions {
  page_size?: number;
  min_revision?: Int64;
  /** A CEL expression over the document `value` and its `key`: only matches are listed. */
  filter?: string;
  /** RFC 6901 JSON Pointers: each value holds only these members, at their paths. */
  fields?: readonly string[];
}

export interface WatchOptions {
  /** Replay the changes from this revision instead of starting with a snapshot. */
  start_revision?: Int64;
  /** The store `start_revision` belongs to: another store refuses. */
  store_id?: string;
  /** Keys already seen of `start_revision` (a resumed watch's `resumeSeenKeys`). */
  seen_keys?: Iterable<string>;
  prev_kv?: boolean;
  /** Bounds the whole watch, reconnects included. */
  deadlineMs?: number;
}

/** watchPrefix's options: a watch's, and those of a live query. */
export interface WatchPrefixOptions extends WatchOptions {
  /** A CEL expression, as in ListOptions: the watch is a view of the matching documents. */
  filter?: string;
  /** RFC 6901 JSON Pointers, as in ListOptions, applied to every value sent. */
  fields?: readonly string[];
  /** Each put of a document that existed before carries `mergePatch`. */
  diff?: boolean;
}

export interface CompareTarget {
  result?: '==' | '!=' | '<' | '>';
  mod_revision?: Int64;
  create_revision?: Int64;
  version?: Int64;
  value?: Json;
  value_json?: string;
  exists?: boolean;
}

declare const opBrand: unique symbol;
/** A transaction operation, made by op.get(), op.insert(), op.delete() or op.patch(). */
export interface TxnOp {
  readonly [opBrand]?: never;
}
declare const compareBrand: unique symbol;
/** A transaction condition, made by compare(). */
export interface TxnCompare {
  readonly [compareBrand]?: never;
}

export interface Txn {
  compare?: TxnCompare[];
  success?: TxnOp[];
  failure?: TxnOp[];
}

export interface TxnResult {
  succeeded: boolean;
  revision: string;
  /** Per operation: an Entry or null (get), the response (insert, delete), an Entry (patch). */
  results: Array<Entry | null | InsertResponse | DeleteResponse>;
}

export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

export interface FieldViolation {
  field: string;
  description: string;
}

/** A failed call: the gRPC status code (grpc.status), its name, the message and details. */
export declare class JsonKvError extends Error {
  readonly code: grpcJs.status;
  readonly codeName: string;
  readonly details: string;
  readonly metadata: grpcJs.Metadata;
  readonly info: ErrorInfo | null;
  readonly fieldViolations: FieldViolation[];
  /** `info.reason`, or null. */
  readonly reason: string | null;
}

/** A watch that resumes itself; next() resolves to null once cancel() was called. */
export declare class Watch implements AsyncIterable<WatchItem> {
  readonly resumeRevision: bigint;
  readonly resumeSeenKeys: Set<string>;
  readonly storeId: string;
  next(): Promise<WatchItem | null>;
  cancel(): void;
  [Symbol.asyncIterator](): AsyncIterator<WatchItem>;
}

/** Where a watch stands; used by Watch, exported for resuming by hand. */
export declare class WatchResume {
  constructor(startRevision?: Int64, storeId?: string, seenKeys?: Iterable<string>);
  readonly startRevision: bigint;
  readonly seenKeys: Set<string>;
  readonly storeId: string;
  receive(message: unknown): WatchItem | null;
}

export declare class Lease {
  readonly id: string;
  readonly ttlSeconds: number;
  readonly lost: boolean;
  waitLost(timeoutMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export declare class Lock {
  readonly name: string;
  readonly key: string;
  readonly lease: Lease;
  readonly createRevision: string;
  readonly lost: boolean;
  release(): Promise<void>;
}

export declare class Client {
  constructor(addresses?: string | string[], options?: ClientOptions);
  /** The generated client of the server in use. */
  readonly stub: grpcJs.Client;
  /** The address of the server in use. */
  readonly address: string;
  readonly timeoutMs: number | undefined;
  close(): void;
  unary(method: string, request: object, timeoutMs?: number): Promise<any>;
  get<T = Json>(key: string): Promise<Entry<T>>;
  insert(key: string, value: Json, options?: WriteOptions): Promise<InsertResponse>;
  insertJson(key: string, json: string, options?: WriteOptions): Promise<InsertResponse>;
  delete(key: string, options?: DeleteOptions): Promise<DeleteResponse>;
  patch<T = Json>(key: string, patch: PatchOptions): Promise<Entry<T>>;
  merge<T = Json>(key: string, value: Json, options?: WriteOptions): Promise<Entry<T>>;
  mergeJson<T = Json>(key: string, json: string, options?: WriteOptions): Promise<Entry<T>>;
  txn(txn: Txn): Promise<TxnResult>;
  list(prefix?: string, options?: ListOptions): Promise<Entry[]>;
  status(): Promise<StatusResponse>;
  watchKey(key: string, options?: WatchOptions): Watch;
  watchPrefix(prefix: string, options?: WatchPrefixOptions): Watch;
  leaseGrant(ttlSeconds: Int64, options?: { id?: Int64 }): Promise<LeaseGrantResponse>;
  leaseKeepAlive(id: Int64, options?: { timeoutMs?: number }): Promise<string>;
  leaseRevoke(id: Int64): Promise<string>;
  leaseTimeToLive(id: Int64, options?: { keys?: boolean }): Promise<LeaseTimeToLiveResponse>;
  leaseList(): Promise<string[]>;
  lease(ttlSeconds: number, options?: { id?: Int64 }): Promise<Lease>;
  lock(name: string, options?: { ttl?: number; timeoutMs?: number }): Promise<Lock>;
}

export declare function connect(addresses?: string | string[], options?: ClientOptions): Client;
export declare function compare(key: string, target: CompareTarget): TxnCompare;
export declare const op: {
  get(key: string): TxnOp;
  insert(key: string, value: Json, options?: WriteOptions): TxnOp;
  insertJson(key: string, json: string, options?: WriteOptions): TxnOp;
  delete(key: string, options?: DeleteOptions): TxnOp;
  patch(key: string, patch: PatchOptions): TxnOp;
};
/** The ErrorInfo detail of a failed call, or null. */
export declare function errorInfo(err: unknown): ErrorInfo | null;
/** The details of type `typeName` (e.g. 'google.rpc.BadRequest') of a failed call. */
export declare function statusDetails(err: unknown, typeName: string): Array<Record<string, any>>;
export declare const grpc: typeof grpcJs;
export declare const status: typeof grpcJs.status;
export declare const DEFAULT_TARGET: string;
export declare const DEFAULT_TIMEOUT_MS: number;
export declare const STORE_ID_HEADER: string;
