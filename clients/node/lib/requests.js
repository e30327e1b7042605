// The requests the client sends and the shapes its answers take: entries (a key and its JSON
// value, as exact text and parsed), the operations and conditions of a transaction (op.*,
// compare()), each operation's result, and int64 arguments checked once.
'use strict';

// A stored key: `json` is the exact JSON text, `value` the parsed value (null for a delete),
// `lease` the lease the key is attached to ('0' if none).
function toEntry(kv) {
  return {
    key: kv.key,
    json: kv.value_json,
    value: kv.value_json ? JSON.parse(kv.value_json) : null,
    create_revision: kv.create_revision,
    mod_revision: kv.mod_revision,
    version: kv.version,
    lease: kv.lease,
  };
}

// An entry for a KeyValue that may be unset (null): a Get of an absent key, no previous value.
function toEntryOrNull(kv) {
  return kv ? toEntry(kv) : null;
}

// A key or prefix: a string, or the call would fail deep in protobufjs with a puzzling message.
function checkKey(key, what = 'key') {
  if (typeof key !== 'string') {
    throw new TypeError(`a ${what} is a string, not ${typeof key} ${String(key)}`);
  }
  return key;
}

// An int64 for a request: a decimal string or a BigInt as it is; a number only if it is a safe
// integer, since a larger one has already been rounded and would name another lease.
function int64(value, name) {
  if (typeof value === 'number' && !Number.isSafeInteger(value)) {
    throw new RangeError(`${name} ${value} is not a safe integer: pass it as a string or BigInt`);
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

function getRequest(key) {
  return { key: checkKey(key), value_encoding: 'VALUE_ENCODING_JSON' };
}

function insertRequest(key, json, { expected_mod_revision, lease = 0 } = {}) {
  if (typeof json !== 'string') throw new TypeError(`the JSON text of ${key} is not a string`);
  return {
    key: checkKey(key),
    value_json: json,
    expected_mod_revision: int64(expected_mod_revision, 'expected_mod_revision'),
    lease: int64(lease, 'lease'),
  };
}

function deleteRequest(key, { expected_mod_revision, allow_missing = false } = {}) {
  return {
    key: checkKey(key),
    expected_mod_revision: int64(expected_mod_revision, 'expected_mod_revision'),
    allow_missing,
  };
}

// Exactly one of `merge` (any JSON value, null included, sent as JSON.stringify(merge)),
// `merge_json` (JSON text, sent as written) and `json_patch` (an array of operations, or the
// text of one sent as written).
function patchRequest(key, patch = {}) {
  const { merge, merge_json, json_patch, expected_mod_revision, lease = 0 } = patch;
  const given = { merge, merge_json, json_patch };
  const set = Object.keys(given).filter((name) => given[name] !== undefined);
  if (set.length !== 1) {
    throw new TypeError(
      `patch of ${key}: give exactly one of merge, merge_json and json_patch, not [${set}]`,
    );
  }
  const request = {
    key: checkKey(key),
    expected_mod_revision: int64(expected_mod_revision, 'expected_mod_revision'),
    lease: int64(lease, 'lease'),
    value_encoding: 'VALUE_ENCODING_JSON',
  };
  if (merge !== undefined) request.merge_json = JSON.stringify(merge);
  else if (merge_json !== undefined) request.merge_json = merge_json;
  else if (typeof json_patch === 'string') request.json_patch = json_patch;
  else request.json_patch = JSON.stringify(json_patch);
  return request;
}

// A live query's filter, a CEL expression ('' or none: every document).
function checkFilter(filter = '') {
  if (typeof filter !== 'string') {
    throw new TypeError(`a filter is a string (a CEL expression), not ${typeof filter}`);
  }
  return filter;
}

// JSON Pointers, each value holding only those members (none: the whole document). A string
// is refused: it is one pointer, not a list of them.
function checkFields(fields = []) {
  if (!Array.isArray(fields)) {
    throw new TypeError(`fields is an array of JSON Pointers, not ${typeof fields} ${fields}`);
  }
  for (const pointer of fields) {
    if (typeof pointer !== 'string') {
      throw new TypeError(`a field is a string (a JSON Pointer), not ${typeof pointer}`);
    }
  }
  return [...fields];
}

function listRequest(prefix, { page_size = 0, min_revision = 0, filter, fields }, page_token) {
  if (!Number.isInteger(page_size) || page_size < 0) {
    throw new RangeError(`page_size is 0 (the server's default) or more, not ${page_size}`);
  }
  return {
    prefix: checkKey(prefix, 'prefix'),
    page_size,
    page_token,
    min_revision: int64(min_revision, 'min_revision'),
    value_encoding: 'VALUE_ENCODING_JSON',
    filter: checkFilter(filter),
    fields: checkFields(fields),
  };
}

const COMPARE_RESULTS = {
  '==': 'COMPARE_RESULT_EQUAL',
  '!=': 'COMPARE_RESULT_NOT_EQUAL',
  '<': 'COMPARE_RESULT_LESS',
  '>': 'COMPARE_RESULT_GREATER',
};
const COMPARE_TARGETS = [
  'mod_revision',
  'create_revision',
  'version',
  'value',
  'value_json',
  'exists',
];

// One condition of a transaction: the key's `target <result> given`, with `result` one of '=='
// (the default), '!=', '<', '>'. compare('a', { mod_revision: rev }) holds when a's mod revision
// is rev; compare('a', { version: 3, result: '<' }) when a was written fewer than 3 times since
// it was created. Exactly one target: `mod_revision`, `create_revision`, `version` (all 0 for an
// absent key; numbers or decimal strings), `value` (the document, sent as JSON.stringify;
// compared as JSON; an absent key equals none), `value_json` (the same as JSON text, sent as
// written) or `exists`; `value`, `value_json` and `exists` take '==' and '!=' only.
function compare(key, { result = '==', ...target } = {}) {
  if (!(result in COMPARE_RESULTS)) {
    const known = Object.keys(COMPARE_RESULTS).join(' ');
    throw new TypeError(`compare result ${result} is none of ${known}`);
  }
  const set = Object.keys(target).filter((name) => target[name] !== undefined);
  if (set.length !== 1 || !COMPARE_TARGETS.includes(set[0])) {
    throw new TypeError(
      `compare of ${key}: give exactly one of ${COMPARE_TARGETS.join(', ')}, not [${set}]`,
    );
  }
  const [name] = set;
  const request = { key: checkKey(key), result: COMPARE_RESULTS[result] };
  if (name === 'value') request.value_json = JSON.stringify(target.value);
  else if (name === 'exists') request.exists = target.exists;
  else request[name] = name === 'value_json' ? target[name] : int64(target[name], name);
  return request;
}

// The operations of a transaction; their options are those of the Client methods of the same
// names, and so are their results: get an entry (null if the key is absent), insert and delete
// the response, patch the entry after the patch.
const op = {
  get: (key) => ({ get: getRequest(key) }),
  insert: (key, value, options) => op.insertJson(key, JSON.stringify(value), options),
  insertJson: (key, json, options) => ({ insert: insertRequest(key, json, options) }),
  delete: (key, options) => ({ delete: deleteRequest(key, options) }),
  patch: (key, patch) => ({ patch: patchRequest(key, patch) }),
};

// One operation's result, as the Client method of its name resolves.
function opResult(result) {
  switch (result.response) {
    case 'get':
      return toEntryOrNull(result.get.kv);
    case 'patch':
      return toEntry(result.patch.kv);
    default:
      return result[result.response];
  }
}

function txnRequest({ compare: conditions = [], success = [], failure = [] } = {}) {
  for (const [name, list] of Object.entries({ compare: conditions, success, failure })) {
    if (!Array.isArray(list)) throw new TypeError(`txn ${name} is an array, not ${typeof list}`);
  }
  return { compare: conditions, success, failure };
}

module.exports = {
  toEntry,
  toEntryOrNull,
  checkKey,
  checkFilter,
  checkFields,
  int64,
  getRequest,
  insertRequest,
  deleteRequest,
  patchRequest,
  listRequest,
  compare,
  op,
  opResult,
  txnRequest,
};
