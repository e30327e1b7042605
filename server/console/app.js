// The jsonkv web console: a browser client of the server's HTTP API (/v1/kv, /v1/watch), in one
// module so that the server embeds a fixed set of files. Its sections, top to bottom: JSON text,
// the HTTP client and its token, status messages, the key list, the document editor (with its
// conflict view), creating and deleting keys, the live watch, and start-up.

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------------------------------------
// JSON text
//
// Documents are shown and edited as text, never round-tripped through JSON.parse and
// JSON.stringify: a JavaScript number cannot hold every JSON number (a large integer would be
// silently rounded), so the editor re-indents the server's text and sends back the user's own.

const JSON_SPACE = ' \t\n\r';

/** Re-indents valid JSON text, copying strings, numbers and literals exactly as written. */
function prettyJson(text, indent = '  ') {
  let out = '';
  let depth = 0;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else if (JSON_SPACE.includes(c)) {
      i += 1;
    } else if (c === '{' || c === '[') {
      const close = c === '{' ? '}' : ']';
      let j = i + 1;
      while (j < n && JSON_SPACE.includes(text[j])) j += 1;
      if (text[j] === close) {
        out += c + close;
        i = j + 1;
      } else {
        depth += 1;
        out += c + '\n' + indent.repeat(depth);
        i += 1;
      }
    } else if (c === '}' || c === ']') {
      depth -= 1;
      out += '\n' + indent.repeat(depth) + c;
      i += 1;
    } else if (c === ',') {
      out += ',\n' + indent.repeat(depth);
      i += 1;
    } else if (c === ':') {
      out += ': ';
      i += 1;
    } else {
      let j = i;
      while (j < n && !',:{}[]"'.includes(text[j]) && !JSON_SPACE.includes(text[j])) j += 1;
      out += text.slice(i, j);
      i = j;
    }
  }
  return out;
}

/** Returns null for valid JSON, else {message, position} describing the first error. */
function jsonProblem(text) {
  if (text.trim() === '') return { message: 'The value is empty: write a JSON value, such as {} or null.', position: 0 };
  try {
    JSON.parse(text);
    return null;
  } catch (e) {
    const at = /position (\d+)/.exec(e.message);
    return { message: e.message, position: at ? Number(at[1]) : null };
  }
}

/**
 * Parses JSON in which a number that a JavaScript number cannot hold exactly stays as its source
 * text (JSON.rawJSON), so that a preview shows what the server has. Browsers without that API
 * parse as JSON.parse does.
 */
function parseExact(text) {
  if (typeof JSON.rawJSON !== 'function') return JSON.parse(text);
  return JSON.parse(text, (_key, value, context) => (
    typeof value === 'number' && context?.source !== undefined && String(value) !== context.source
      ? JSON.rawJSON(context.source)
      : value));
}

/** A one-line preview of a parsed JSON value, cut to fit a list row. */
function preview(value, max = 120) {
  const s = value === undefined ? '' : JSON.stringify(value);
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

// ---------------------------------------------------------------------------------------------
// HTTP client and token
//
// Every call goes through request(). A 401 opens the token dialog and the call is retried with
// the token once the user gives one, so any view can be the first to find that the server wants
// one. The token lives in sessionStorage only: it dies with the tab, and never reaches a URL.

const TOKEN_KEY = 'jsonkv.token';

class ApiError extends Error {
  constructor(status, code, message, extra = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.reason = extra.reason;
    this.metadata = extra.metadata ?? {};
  }
}

function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) ?? '';
}

function setToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $('forget-token').hidden = !token;
  $('token-button').hidden = !token;
}

async function errorFrom(res) {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text);
    if (body && typeof body.message === 'string') {
      return new ApiError(res.status, body.code ?? `HTTP_${res.status}`, body.message, body);
    }
  } catch {
    // Not the JSON error body (a proxy's page, say): show its text as it is.
  }
  return new ApiError(res.status, `HTTP_${res.status}`, text.trim() || res.statusText || 'request failed');
}

let tokenPrompt = null;

/** Asks for a token in the dialog; resolves once one is set, rejects if the user cancels. */
function askToken(refused) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = $('auth-dialog');
  tokenPrompt = new Promise((resolve, reject) => {
    $('auth-error').textContent = refused ? 'The server refused that token. Check it and try again.' : '';
    $('auth-token').value = '';
    dialog.returnValue = '';
    dialog.addEventListener('close', () => {
      tokenPrompt = null;
      const token = $('auth-token').value.trim();
      $('auth-token').value = '';
      if (dialog.returnValue === 'ok' && token) {
        setToken(token);
        resolve();
      } else {
        reject(new ApiError(401, 'UNAUTHENTICATED', 'this server wants a token, and none was given'));
      }
    }, { once: true });
    dialog.showModal();
  });
  return tokenPrompt;
}

/** Sends one request; resolves to the Response when it succeeded, throws ApiError otherwise. */
async function request(method, path, { body, headers = {}, signal } = {}) {
  for (;;) {
    const sent = getToken();
    const h = new Headers(headers);
    if (sent) h.set('Authorization', `Bearer ${sent}`);
    if (body !== undefined && !h.has('Content-Type')) h.set('Content-Type', 'application/json');
    let res;
    try {
      res = await fetch(path, { method, headers: h, body, signal, cache: 'no-store' });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new ApiError(0, 'UNREACHABLE', `cannot reach the server (${e.message})`);
    }
    if (res.status === 401) {
      const err = await errorFrom(res);
      // Another call may have set a new token while this one was in flight: try that first.
      if (getToken() !== sent) continue;
      try {
        await askToken(Boolean(sent));
      } catch {
        throw err;
      }
      continue;
    }
    if (!res.ok) throw await errorFrom(res);
    return res;
  }
}

/** The path of a key's document. A key that is exactly "." or ".." cannot travel in a URL path. */
function kvPath(key) {
  if (key === '.' || key === '..') {
    throw new ApiError(0, 'INVALID_KEY', `the key "${key}" cannot be addressed in a URL path; use the CLI for it`);
  }
  return `/v1/kv/${encodeURIComponent(key)}`;
}

const quoteEtag = (revision) => `"${revision}"`;

function revisionOf(err) {
  const r = err.metadata?.current_mod_revision;
  return r === undefined || r === null ? null : String(r);
}

// ---------------------------------------------------------------------------------------------
// Status messages

function say(message, kind = 'info') {
  const el = $('status');
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = !message;
}

function describe(err) {
  if (err instanceof ApiError) {
    if (err.status === 403) return `Your token lacks the right to do this: ${err.message} (${err.code})`;
    if (err.status === 0) return err.message;
    return `${err.code}: ${err.message} (HTTP ${err.status})`;
  }
  return String(err?.message ?? err);
}

function sayError(context, err) {
  say(`${context}: ${describe(err)}`, 'error');
}

// ---------------------------------------------------------------------------------------------
// CEL filters. The server checks them (the console does not parse CEL): a bad one is an HTTP 400
// whose message names the place as line:column, counted in characters from 1.

/** True if err is the server refusing a filter that was sent with the request. */
function isFilterError(err) {
  return err instanceof ApiError && err.status === 400 && err.code === 'INVALID_ARGUMENT';
}

/** The offset in text (in UTF-16 units, as an input's selection counts) of the error's line:column. */
function filterErrorOffset(err, text) {
  const m = /invalid filter: (\d+):(\d+)/.exec(err.message);
  if (!m) return null;
  const lines = text.split('\n');
  const line = Number(m[1]) - 1;
  if (line < 0 || line >= lines.length) return null;
  let offset = 0;
  for (let i = 0; i < line; i += 1) offset += lines[i].length + 1;
  // The server counts characters (code points), which an emoji makes differ from UTF-16 units.
  return offset + Array.from(lines[line]).slice(0, Math.max(0, Number(m[2]) - 1)).join('').length;
}

/** Marks a filter field as refused, described by the element that shows why. */
function markFilterInvalid(input, describedBy, err, { focus }) {
  input.setAttribute('aria-invalid', 'true');
  input.dataset.describedby ??= input.getAttribute('aria-describedby') ?? '';
  input.setAttribute('aria-describedby', `${describedBy} ${input.dataset.describedby}`.trim());
  if (focus) input.focus();
  const at = filterErrorOffset(err, input.value);
  if (at !== null && document.activeElement === input) input.setSelectionRange(at, Math.min(at + 1, input.value.length));
}

function clearFilterInvalid(input) {
  if (input.getAttribute('aria-invalid') !== 'true') return;
  input.removeAttribute('aria-invalid');
  if (input.dataset.describedby !== undefined) {
    input.setAttribute('aria-describedby', input.dataset.describedby);
    delete input.dataset.describedby;
  }
}

// ---------------------------------------------------------------------------------------------
// Key list: one page at a time. The server hands out a token for the next page only, so the
// tokens of the pages already passed are kept on a stack to go back.

const list = { prefix: '', where: '', pageSize: 50, token: '', back: [], next: '', loaded: 0 };

async function loadKeys() {
  const ticket = (list.loaded += 1);
  const params = new URLSearchParams({ prefix: list.prefix, limit: String(list.pageSize), keys_only: 'true' });
  if (list.token) params.set('page_token', list.token);
  if (list.where) params.set('filter', list.where);
  let body;
  try {
    const res = await request('GET', `/v1/kv?${params}`);
    body = await res.json();
  } catch (err) {
    if (ticket !== list.loaded) return;
    if (list.where && isFilterError(err)) {
      // A list that does not answer the filter asked for would mislead: show none.
      $('key-list').replaceChildren();
      list.next = '';
      $('prev-page').disabled = true;
      $('next-page').disabled = true;
      $('keys-summary').textContent = `The server refused the where filter: ${err.message}`;
      $('keys-summary').dataset.kind = 'error';
      markFilterInvalid($('where'), 'keys-summary', err, { focus: false });
    } else {
      sayError('Could not list the keys', err);
      $('keys-summary').textContent = 'The list could not be loaded.';
      $('keys-summary').dataset.kind = 'error';
    }
    return;
  }
  // A slower answer to an older filter must not overwrite a newer one.
  if (ticket !== list.loaded) return;
  clearFilterInvalid($('where'));
  list.next = body.next_page_token ?? '';
  renderKeys(body.kvs ?? [], body.revision);
}

function renderKeys(kvs, revision) {
  const ul = $('key-list');
  // A refresh must not throw away the keyboard user's place in the list.
  const focused = ul.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  ul.replaceChildren();
  for (const kv of kvs) {
    const li = document.createElement('li');
    const button = document.createElement('button');
    button.type = 'button';
    button.className = 'key-item';
    button.dataset.key = kv.key;
    button.dataset.testid = 'key-item';
    const name = document.createElement('span');
    name.className = 'key-name';
    name.textContent = kv.key;
    button.append(name);
    if (kv.mod_revision !== undefined) {
      const meta = document.createElement('span');
      meta.className = 'key-meta';
      meta.textContent = `rev ${kv.mod_revision}`;
      button.append(meta);
    }
    if (kv.key === doc.key) button.setAttribute('aria-current', 'true');
    li.append(button);
    ul.append(li);
    if (kv.key === focused) button.focus();
  }
  const page = list.back.length + 1;
  const where = (list.prefix ? `under “${list.prefix}”` : 'in the store') + (list.where ? ` where ${list.where}` : '');
  const noun = list.where ? 'matching key' : 'key';
  // With a where filter the server may end a page early, even empty, and still have more.
  let summary;
  if (kvs.length > 0) summary = `${kvs.length} ${noun}${kvs.length === 1 ? '' : 's'} ${where}${list.next || page > 1 ? `, page ${page}` : ''}.`;
  else if (list.next) summary = `No ${noun}s ${where} on page ${page}; there may be more on the next.`;
  else summary = page === 1 ? `No ${noun}s ${where}.` : `No more ${noun}s.`;
  $('keys-summary').textContent = summary;
  delete $('keys-summary').dataset.kind;
  $('page-number').textContent = `Page ${page}`;
  $('prev-page').disabled = list.back.length === 0;
  $('next-page').disabled = !list.next;
  if (revision !== undefined) $('server-info').textContent = `store revision ${revision}`;
}

let listRefresh = null;

/** Refreshes the list soon after a change the live panel saw under the listed prefix. */
function keyChanged(key) {
  if (!key.startsWith(list.prefix)) return;
  clearTimeout(listRefresh);
  listRefresh = setTimeout(loadKeys, 300);
}

function markCurrentKey() {
  for (const b of $('key-list').querySelectorAll('.key-item')) {
    if (b.dataset.key === doc.key) b.setAttribute('aria-current', 'true');
    else b.removeAttribute('aria-current');
  }
}

/** Lists from the first page again; the where filter is taken from its field only when asked. */
function filterKeys({ applyWhere = true } = {}) {
  list.prefix = $('prefix').value;
  if (applyWhere) list.where = $('where').value.trim();
  list.pageSize = Number($('page-size').value);
  list.token = '';
  list.back = [];
  return loadKeys();
}

function setUpKeyList() {
  let typing = null;
  $('filter-form').addEventListener('submit', (e) => {
    e.preventDefault();
    clearTimeout(typing);
    filterKeys();
  });
  // The prefix applies as it is typed; a where filter half typed is not valid CEL, so it
  // applies on Enter (or at once when the field is emptied).
  $('prefix').addEventListener('input', () => {
    clearTimeout(typing);
    typing = setTimeout(() => filterKeys({ applyWhere: false }), 250);
  });
  $('where').addEventListener('input', () => {
    clearFilterInvalid($('where'));
    if ($('where').value.trim() === '' && list.where !== '') {
      clearTimeout(typing);
      filterKeys();
    }
  });
  $('page-size').addEventListener('change', () => filterKeys({ applyWhere: false }));
  $('next-page').addEventListener('click', () => {
    if (!list.next) return;
    list.back.push(list.token);
    list.token = list.next;
    loadKeys();
  });
  $('prev-page').addEventListener('click', () => {
    if (list.back.length === 0) return;
    list.token = list.back.pop();
    loadKeys();
  });
  $('key-list').addEventListener('click', (e) => {
    const item = e.target.closest('.key-item');
    if (item) openKey(item.dataset.key, { focusEditor: false, reveal: true });
  });
  // Arrow keys walk the list, as in a listbox, while each row stays a plain button.
  $('key-list').addEventListener('keydown', (e) => {
    if (e.key !== 'ArrowDown' && e.key !== 'ArrowUp') return;
    const items = [...$('key-list').querySelectorAll('.key-item')];
    const at = items.indexOf(document.activeElement);
    if (at < 0) return;
    e.preventDefault();
    items[Math.max(0, Math.min(items.length - 1, at + (e.key === 'ArrowDown' ? 1 : -1)))].focus();
  });
}

// ---------------------------------------------------------------------------------------------
// Document editor. `doc` is what was last read from the server; the editor's text is the user's.
// A save is a compare-and-swap on the mod revision that was read, so it never overwrites a
// change the user has not seen.

const doc = { key: null, modRevision: null, createRevision: null, version: null, lease: '0', text: '' };
const conflict = { mine: '', theirs: null };

/** Reads a key's document and its revisions; null if the key does not exist. */
async function fetchDoc(key, minRevision) {
  const q = minRevision ? `?min_revision=${encodeURIComponent(minRevision)}` : '';
  try {
    const res = await request('GET', kvPath(key) + q);
    const h = res.headers;
    return {
      key,
      text: await res.text(),
      modRevision: h.get('Jsonkv-Mod-Revision') ?? (h.get('ETag') ?? '').replaceAll('"', ''),
      createRevision: h.get('Jsonkv-Create-Revision') ?? '',
      version: h.get('Jsonkv-Version') ?? '',
      lease: h.get('Jsonkv-Lease') ?? '0',
    };
  } catch (err) {
    if (err instanceof ApiError && err.status === 404) return null;
    throw err;
  }
}

function isDirty() {
  return !$('doc-form').hidden && doc.key !== null && $('doc-editor').value !== prettyJson(doc.text);
}

function showPane(which) {
  $('doc-empty').hidden = which !== 'empty';
  $('doc-form').hidden = which !== 'doc';
  $('conflict').hidden = which !== 'conflict';
  $('create-form').hidden = which !== 'create';
}

function showDoc(d, { focusEditor = false } = {}) {
  Object.assign(doc, d);
  $('doc-key').textContent = d.key;
  $('meta-mod').textContent = d.modRevision;
  $('meta-create').textContent = d.createRevision;
  $('meta-version').textContent = d.version;
  $('meta-lease').textContent = d.lease;
  $('meta-lease-row').hidden = !d.lease || d.lease === '0';
  $('doc-editor').value = prettyJson(d.text);
  $('doc-error').textContent = '';
  $('doc-changed').hidden = true;
  showPane('doc');
  markCurrentKey();
  const hash = `#/kv/${encodeURIComponent(d.key)}`;
  if (location.hash !== hash) history.replaceState(null, '', hash);
  if (focusEditor) $('doc-editor').focus();
}

function closeDoc() {
  doc.key = null;
  showPane('empty');
  markCurrentKey();
  if (location.hash) history.replaceState(null, '', location.pathname);
}

const stacked = window.matchMedia('(max-width: 859px)');

async function openKey(key, { focusEditor = true, minRevision, reveal = false } = {}) {
  if (key !== doc.key && isDirty()) {
    const discard = await confirmDialog({
      title: 'Discard your changes?',
      text: `Your edits to “${doc.key}” have not been saved.`,
      ok: 'Discard',
    });
    if (!discard) return;
  }
  let d;
  try {
    d = await fetchDoc(key, minRevision);
  } catch (err) {
    sayError(`Could not read “${key}”`, err);
    return;
  }
  if (d === null) {
    say(`“${key}” does not exist (any more).`, 'error');
    if (doc.key === key) closeDoc();
    return;
  }
  say('');
  showDoc(d, { focusEditor });
  // In one column the document is below the list, out of sight: take the user there.
  if (reveal && stacked.matches) $('doc-panel').focus();
}

function refuseBadJson(text, errorEl, editor) {
  const problem = jsonProblem(text);
  if (!problem) {
    errorEl.textContent = '';
    return false;
  }
  errorEl.textContent = `Not valid JSON, nothing was sent: ${problem.message}`;
  editor.focus();
  if (problem.position !== null) editor.setSelectionRange(problem.position, problem.position + 1);
  return true;
}

async function saveDoc() {
  const text = $('doc-editor').value;
  if (refuseBadJson(text, $('doc-error'), $('doc-editor'))) return;
  await putMine(text, { 'If-Match': quoteEtag(doc.modRevision) });
}

/** Writes the user's text over the key under a precondition; a 412 opens the conflict view. */
async function putMine(text, precondition) {
  const key = doc.key;
  let revision;
  try {
    const res = await request('PUT', kvPath(key), { body: text, headers: precondition });
    revision = (await res.json()).revision;
  } catch (err) {
    if (err instanceof ApiError && err.status === 412) {
      await showConflict(text, err);
    } else {
      sayError(`Could not save “${key}”`, err);
    }
    return;
  }
  say(`Saved “${key}” at revision ${revision}.`, 'ok');
  const d = await fetchDoc(key, revision).catch(() => null);
  if (d) showDoc(d);
  loadKeys();
}

async function showConflict(mine, err) {
  let theirs;
  try {
    theirs = await fetchDoc(doc.key);
  } catch (e) {
    sayError(`Someone else changed “${doc.key}”, and it could not be read back`, e);
    return;
  }
  conflict.mine = mine;
  conflict.theirs = theirs;
  $('conflict-heading').textContent = `Someone else saved “${doc.key}” first`;
  const won = theirs ? theirs.modRevision : revisionOf(err);
  $('conflict-summary').textContent = theirs
    ? `Your edit was based on revision ${doc.modRevision}, but the server's copy is now at revision ${won}: that change won, and yours was not saved.`
    : `Your edit was based on revision ${doc.modRevision}, but the key has since been deleted; yours was not saved.`;
  $('conflict-mine').textContent = prettyJson(mine);
  $('conflict-theirs-title').textContent = theirs ? `On the server (revision ${won})` : 'On the server (deleted)';
  $('conflict-theirs').textContent = theirs ? prettyJson(theirs.text) : '(deleted)';
  $('conflict-theirs').dataset.revision = theirs ? theirs.modRevision : '';
  $('conflict-take').textContent = theirs ? 'Take theirs' : 'Accept the delete';
  showPane('conflict');
  say(`Conflict on “${doc.key}”: revision ${won ?? '(deleted)'} won. Choose which version to keep.`, 'error');
  $('conflict-take').focus();
}

function setUpEditor() {
  $('doc-form').addEventListener('submit', (e) => {
    e.preventDefault();
    saveDoc();
  });
  $('doc-editor').addEventListener('keydown', (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === 's') {
      e.preventDefault();
      saveDoc();
    }
  });
  $('doc-editor').addEventListener('input', () => {
    $('doc-error').textContent = '';
  });
  $('format-doc').addEventListener('click', () => {
    const text = $('doc-editor').value;
    if (!refuseBadJson(text, $('doc-error'), $('doc-editor'))) $('doc-editor').value = prettyJson(text);
  });
  $('revert-doc').addEventListener('click', () => {
    $('doc-editor').value = prettyJson(doc.text);
    $('doc-error').textContent = '';
  });
  $('reload-doc').addEventListener('click', async () => {
    if (isDirty() && !(await confirmDialog({ title: 'Discard your changes?', text: `Reloading “${doc.key}” drops your unsaved edits.`, ok: 'Reload' }))) return;
    $('doc-editor').value = prettyJson(doc.text);
    openKey(doc.key, { focusEditor: false });
  });
  $('delete-doc').addEventListener('click', deleteDoc);
  $('watch-doc').addEventListener('click', () => {
    $('watch-mode-key').checked = true;
    $('watch-target').value = doc.key;
    startWatch('key', doc.key);
    $('live-panel').scrollIntoView({ block: 'nearest' });
  });
  $('conflict-overwrite').addEventListener('click', () => {
    // The overwrite is itself conditional, on the revision the user was just shown, so a third
    // writer in between brings the conflict back rather than being lost.
    const theirs = conflict.theirs;
    doc.modRevision = theirs ? theirs.modRevision : doc.modRevision;
    showPane('doc');
    $('doc-editor').value = conflict.mine;
    putMine(conflict.mine, theirs ? { 'If-Match': quoteEtag(theirs.modRevision) } : { 'If-None-Match': '*' });
  });
  $('conflict-take').addEventListener('click', () => {
    if (conflict.theirs) {
      showDoc(conflict.theirs, { focusEditor: true });
      say(`Took the server's version of “${conflict.theirs.key}” (revision ${conflict.theirs.modRevision}).`, 'ok');
    } else {
      say(`“${doc.key}” stays deleted.`, 'ok');
      closeDoc();
      loadKeys();
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Creating and deleting keys

async function createKey() {
  const key = $('create-key').value;
  const text = $('create-value').value;
  const errorEl = $('create-error');
  if (key === '') {
    errorEl.textContent = 'Give the key a name.';
    $('create-key').focus();
    return;
  }
  if (refuseBadJson(text, errorEl, $('create-value'))) return;
  let revision;
  try {
    // If-None-Match: * makes the write create-only, so an existing key is never overwritten.
    const res = await request('PUT', kvPath(key), { body: text, headers: { 'If-None-Match': '*' } });
    revision = (await res.json()).revision;
  } catch (err) {
    errorEl.textContent = err instanceof ApiError && err.status === 412
      ? `“${key}” already exists, so nothing was written. Open it from the list to edit it.`
      : describe(err);
    return;
  }
  errorEl.textContent = '';
  say(`Created “${key}” at revision ${revision}.`, 'ok');
  const d = await fetchDoc(key, revision).catch(() => null);
  if (d) showDoc(d);
  loadKeys();
}

async function deleteDoc() {
  const key = doc.key;
  const ok = await confirmDialog({
    title: 'Delete key?',
    text: `Delete “${key}” (revision ${doc.modRevision})? This cannot be undone.`,
    ok: 'Delete',
  });
  if (!ok) return;
  let revision;
  try {
    const res = await request('DELETE', kvPath(key), { headers: { 'If-Match': quoteEtag(doc.modRevision) } });
    revision = (await res.json()).revision;
  } catch (err) {
    if (err instanceof ApiError && err.status === 412) {
      say(`“${key}” changed since you loaded it (now revision ${revisionOf(err) ?? '?'}), so it was not deleted. Reload it and look first.`, 'error');
    } else if (err instanceof ApiError && err.status === 404) {
      say(`“${key}” was already deleted.`, 'ok');
      closeDoc();
      loadKeys();
    } else {
      sayError(`Could not delete “${key}”`, err);
    }
    return;
  }
  say(`Deleted “${key}” at revision ${revision}.`, 'ok');
  closeDoc();
  loadKeys();
}

/** Shows the confirmation dialog; resolves true if the user confirmed. */
function confirmDialog({ title, text, ok }) {
  const dialog = $('confirm-dialog');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = ok;
  dialog.returnValue = '';
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    dialog.showModal();
  });
}

function setUpCreate() {
  $('new-key').addEventListener('click', () => {
    $('create-key').value = list.prefix;
    $('create-value').value = '{}';
    $('create-error').textContent = '';
    showPane('create');
    $('create-key').focus();
  });
  $('create-form').addEventListener('submit', (e) => {
    e.preventDefault();
    createKey();
  });
  $('create-cancel').addEventListener('click', () => showPane(doc.key === null ? 'empty' : 'doc'));
}

// ---------------------------------------------------------------------------------------------
// Live watch over fetch streaming (EventSource cannot send an Authorization header).
//
// Exactly-once across reconnects rests on the server's `id:` lines, which mark the only safe
// resume points: events that arrive without one (more of the same revision follow) are held back
// until the revision's last event brings its id, and dropped if the connection dies first, as
// the resumed stream sends that whole revision again after the last id.

const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 5000;
// No byte at all for this long (heartbeats included) means the connection is dead even though
// no error said so, as happens when a network path silently drops.
const STALL_MS = 60000;
const MAX_EVENT_ROWS = 1000;
const RETRYABLE_STATUS = new Set([0, 429, 502, 503, 504]);

/** Splits a text/event-stream into events, as the WHATWG parser does, keeping each event's own id. */
class SseParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = '';
    this.reset();
  }

  reset() {
    this.type = '';
    this.data = [];
    this.id = null;
  }

  push(chunk) {
    this.buffer += chunk;
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      // A lone \r at the very end may be the first half of \r\n: wait for the next chunk.
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) return;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      this.line(line);
    }
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) this.onEvent({ type: this.type || 'message', data: this.data.join('\n'), id: this.id });
      this.reset();
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.type = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.id = value;
  }
}

class StreamError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

class LiveWatch {
  constructor(mode, target, view, filter = '') {
    this.mode = mode;
    this.target = target;
    // A live query: the server sends only the documents that match, and says of each change
    // whether the document entered, changed inside or left the match (view_change).
    this.filter = mode === 'prefix' ? filter : '';
    this.view = view;
    this.lastId = null;
    this.storeId = null;
    this.stopper = new AbortController();
    this.pending = [];
    this.snapshot = [];
    this.heard = false;
  }

  stop() {
    this.stopper.abort();
  }

  get stopped() {
    return this.stopper.signal.aborted;
  }

  url() {
    const params = new URLSearchParams({ [this.mode]: this.target });
    // Kept on every reconnect: Last-Event-ID resumes the same live query, not an unfiltered one.
    if (this.filter) params.set('filter', this.filter);
    if (this.storeId) params.set('store_id', this.storeId);
    return `/v1/watch?${params}`;
  }

  async run() {
    const what = (this.mode === 'key' ? `key “${this.target}”` : (this.target ? `prefix “${this.target}”` : 'all keys'))
      + (this.filter ? ` where ${this.filter}` : '');
    let failures = 0;
    let lostAt = null;
    while (!this.stopped) {
      const conn = new AbortController();
      const stopConn = () => conn.abort();
      this.stopper.signal.addEventListener('abort', stopConn, { once: true });
      try {
        const headers = { Accept: 'text/event-stream' };
        if (this.lastId !== null) headers['Last-Event-ID'] = this.lastId;
        if (failures === 0 && lostAt === null) this.view.state('connecting', `Connecting to watch ${what}…`);
        const res = await request('GET', this.url(), { headers, signal: conn.signal });
        this.storeId ??= res.headers.get('Jsonkv-Store-Id');
        if (lostAt !== null) {
          this.view.notice('resumed', `Resumed after revision ${lostAt}: nothing missed.`);
          this.view.state('live', `Watching ${what}; resumed after revision ${lostAt}.`);
          lostAt = null;
        } else {
          this.view.state('live', `Watching ${what}.`);
        }
        await this.read(res.body, conn);
        if (!this.stopped) throw new StreamError('UNAVAILABLE', 'the server closed the stream');
      } catch (err) {
        if (this.stopped) return;
        const code = err.code ?? '';
        const retryable = err instanceof StreamError
          ? code === 'UNAVAILABLE' || code === 'STALLED'
          : err instanceof ApiError && RETRYABLE_STATUS.has(err.status);
        // Held-back events of a revision not finished are sent again after the resume point.
        this.pending = [];
        this.snapshot = [];
        if (this.filter && isFilterError(err)) {
          // Stopped first, so that the filter field is enabled again when it takes the focus.
          this.view.stopped();
          this.view.filterRefused(err);
          return;
        }
        if (!retryable) {
          this.view.state('error', `Watch ended: ${describe(err)}${err instanceof StreamError ? ` (${code})` : ''}`);
          this.view.notice('error', `Watch ended: ${err.message}`);
          this.view.stopped();
          return;
        }
        // The backoff starts over only after a connection that carried something, so a server
        // that accepts and at once drops the stream is not hammered.
        failures = this.heard ? 1 : failures + 1;
        this.heard = false;
        const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (failures - 1)) * (0.75 + Math.random() / 2);
        if (lostAt === null && this.lastId !== null) {
          lostAt = this.lastId;
          this.view.notice('lost', `Connection lost; resuming after revision ${lostAt}.`);
        }
        const seconds = (delay / 1000).toFixed(1);
        this.view.state('reconnecting', this.lastId !== null
          ? `Connection lost; resuming after revision ${this.lastId} (attempt ${failures}, next in ${seconds} s).`
          : `Cannot reach the server; retrying (attempt ${failures}, next in ${seconds} s).`);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, delay);
          this.stopper.signal.addEventListener('abort', () => { clearTimeout(t); resolve(); }, { once: true });
        });
      } finally {
        this.stopper.signal.removeEventListener('abort', stopConn);
        conn.abort();
      }
    }
  }

  async read(body, conn) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    const parser = new SseParser((ev) => this.event(ev));
    let stall;
    const arm = () => {
      clearTimeout(stall);
      stall = setTimeout(() => conn.abort(new StreamError('STALLED', 'no data from the server')), STALL_MS);
    };
    arm();
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (conn.signal.reason instanceof StreamError) throw conn.signal.reason;
          throw new StreamError('UNAVAILABLE', `connection lost (${e.message})`);
        }
        if (chunk.done) return;
        this.heard = true;
        arm();
        parser.push(chunk.value);
      }
    } finally {
      clearTimeout(stall);
    }
  }

  event({ type, data, id }) {
    if (type === 'error') {
      let body = {};
      try { body = JSON.parse(data); } catch { /* shown raw below */ }
      throw new StreamError(body.code ?? 'UNKNOWN', body.message ?? data);
    }
    const payload = parseExact(data);
    if (type === 'snapshot') {
      this.snapshot.push(...(payload.kvs ?? []));
      if (id !== null) {
        this.view.snapshot(payload.revision ?? id, this.snapshot, this.filter);
        this.snapshot = [];
        this.lastId = id;
      }
    } else if (type === 'put' || type === 'delete') {
      this.pending.push({ type, ...payload });
      if (id !== null) {
        for (const ev of this.pending) this.view.change(ev);
        this.pending = [];
        this.lastId = id;
      }
    } else if (type === 'progress' && id !== null) {
      this.lastId = id;
    }
  }
}

/** The live panel's DOM: the state line and the list of snapshots, changes and notices. */
const liveView = {
  state(kind, text) {
    const el = $('live-state');
    el.dataset.state = kind;
    el.textContent = text;
  },

  append(li) {
    const ol = $('live-events');
    const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
    ol.append(li);
    while (ol.children.length > MAX_EVENT_ROWS) ol.firstElementChild.remove();
    if (atBottom) ol.scrollTop = ol.scrollHeight;
  },

  notice(kind, text) {
    const li = document.createElement('li');
    li.className = `event notice notice-${kind}`;
    li.dataset.type = 'notice';
    li.dataset.kind = kind;
    li.dataset.testid = 'live-notice';
    li.textContent = text;
    this.append(li);
  },

  filterRefused(err) {
    this.state('error', `Watch not started: ${err.message}`);
    markFilterInvalid($('watch-filter'), 'live-state', err, { focus: true });
  },

  snapshot(revision, kvs, filter) {
    const li = document.createElement('li');
    li.className = 'event snapshot';
    li.dataset.type = 'snapshot';
    li.dataset.revision = String(revision);
    li.dataset.testid = 'live-snapshot';
    if (filter) li.dataset.filter = filter;
    const head = document.createElement('div');
    head.className = 'event-head';
    const noun = filter ? 'matching key' : 'key';
    head.append(badge('snapshot'), text('ev-rev', `r${revision}`),
      text('ev-summary', `${kvs.length} ${noun}${kvs.length === 1 ? '' : 's'}`));
    if (filter) head.append(text('ev-filter', `where ${filter}`));
    li.append(head);
    if (kvs.length > 0) {
      const ul = document.createElement('ul');
      ul.className = 'snapshot-keys';
      for (const kv of kvs.slice(0, 200)) {
        const item = document.createElement('li');
        item.dataset.key = kv.key;
        item.append(keyButton(kv.key), text('ev-preview', preview(kv.value, 60)));
        ul.append(item);
      }
      if (kvs.length > 200) {
        const more = document.createElement('li');
        more.className = 'muted';
        more.textContent = `and ${kvs.length - 200} more`;
        ul.append(more);
      }
      li.append(ul);
    }
    this.append(li);
  },

  change(ev) {
    const li = document.createElement('li');
    li.className = `event change ${ev.type}`;
    li.dataset.type = ev.type;
    li.dataset.key = ev.key;
    li.dataset.revision = String(ev.revision ?? ev.mod_revision);
    li.dataset.testid = 'live-event';
    const view = VIEW_CHANGES[ev.view_change];
    if (view) li.dataset.viewChange = ev.view_change;
    const head = document.createElement('div');
    head.className = 'event-head';
    head.append(badge(ev.type));
    if (view) head.append(viewBadge(ev.view_change, view));
    head.append(text('ev-rev', `r${li.dataset.revision}`), keyButton(ev.key));
    if (ev.type === 'put' && ev.version !== undefined) head.append(text('ev-version', `v${ev.version}`));
    li.append(head);
    // A document that left a filtered watch may have been changed or deleted: the event says not which.
    const detail = ev.type === 'put' ? preview(ev.value)
      : ev.cause ? `lease ${ev.cause}`
        : ev.view_change === 'left' ? 'no longer matches (changed or deleted)' : 'deleted';
    li.append(text('ev-preview', detail));
    this.append(li);
    keyChanged(ev.key);
    if (ev.key === doc.key && !$('doc-form').hidden && Number(li.dataset.revision) > Number(doc.modRevision)) {
      const el = $('doc-changed');
      el.textContent = ev.type === 'put'
        ? `Changed on the server at revision ${li.dataset.revision}. Reload to see it; a save now would conflict.`
        : ev.view_change === 'left'
          ? `Changed or deleted on the server at revision ${li.dataset.revision} (it left the live filter). Reload to see it.`
          : `Deleted on the server at revision ${li.dataset.revision}.`;
      el.hidden = false;
    }
  },

  stopped() {
    setWatching(null);
  },
};

// What each view change of a filtered watch is called in the panel.
const VIEW_CHANGES = {
  entered: 'entered',
  updated: 'updated',
  left: 'left',
};

function viewBadge(change, label) {
  const span = document.createElement('span');
  span.className = `ev-view ev-view-${change}`;
  span.dataset.testid = 'live-view-change';
  span.textContent = label;
  span.title = change === 'entered' ? 'Now matches the filter'
    : change === 'left' ? 'No longer matches the filter' : 'Changed, and still matches the filter';
  return span;
}

function badge(type) {
  const span = document.createElement('span');
  span.className = `ev-type ev-${type}`;
  span.textContent = type;
  return span;
}

function text(className, value) {
  const span = document.createElement('span');
  span.className = className;
  span.textContent = value;
  return span;
}

function keyButton(key) {
  const b = document.createElement('button');
  b.type = 'button';
  b.className = 'ev-key link';
  b.dataset.key = key;
  b.textContent = key;
  b.title = `Open ${key}`;
  return b;
}

let watch = null;

function setWatching(w) {
  watch = w;
  $('watch-toggle').textContent = w ? 'Stop' : 'Watch';
  $('watch-toggle').classList.toggle('primary', !w);
  $('watch-target').disabled = Boolean(w);
  for (const r of document.querySelectorAll('input[name="watch-mode"]')) r.disabled = Boolean(w);
  syncFilterField();
}

/** The filter applies to prefix watches only (the server refuses one on a key), and not mid-watch. */
function syncFilterField() {
  const key = $('watch-mode-key').checked;
  $('watch-filter').disabled = Boolean(watch) || key;
}

function startWatch(mode, target, filter = '') {
  if (watch) watch.stop();
  const w = new LiveWatch(mode, target, liveView, filter);
  setWatching(w);
  w.run().catch((err) => {
    liveView.state('error', `Watch failed: ${describe(err)}`);
    if (watch === w) setWatching(null);
  });
}

function setUpLive() {
  $('live-form').addEventListener('submit', (e) => {
    e.preventDefault();
    if (watch) {
      watch.stop();
      setWatching(null);
      liveView.state('idle', 'Stopped watching.');
      return;
    }
    const mode = document.querySelector('input[name="watch-mode"]:checked').value;
    const target = $('watch-target').value;
    if (mode === 'key' && target === '') {
      liveView.state('error', 'Name the key to watch.');
      $('watch-target').focus();
      return;
    }
    clearFilterInvalid($('watch-filter'));
    startWatch(mode, target, mode === 'prefix' ? $('watch-filter').value.trim() : '');
  });
  for (const r of document.querySelectorAll('input[name="watch-mode"]')) r.addEventListener('change', syncFilterField);
  // A reload may restore the Key choice: the field follows it from the start.
  syncFilterField();
  $('watch-filter').addEventListener('input', () => clearFilterInvalid($('watch-filter')));
  $('live-clear').addEventListener('click', () => $('live-events').replaceChildren());
  $('live-events').addEventListener('click', (e) => {
    const b = e.target.closest('.ev-key');
    if (b) openKey(b.dataset.key, { focusEditor: false, reveal: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Start-up

function keyFromHash() {
  const m = /^#\/kv\/(.+)$/.exec(location.hash);
  if (!m) return null;
  try {
    return decodeURIComponent(m[1]);
  } catch {
    return null;
  }
}

function start() {
  setToken(getToken());
  setUpKeyList();
  setUpEditor();
  setUpCreate();
  setUpLive();
  $('token-button').addEventListener('click', () => askToken(false).then(() => {
    filterKeys();
    if (doc.key !== null) openKey(doc.key, { focusEditor: false });
  }, () => {}));
  // Cancel is not a submit button, so that Enter in the token field submits the token.
  $('auth-cancel').addEventListener('click', () => $('auth-dialog').close('cancel'));
  $('forget-token').addEventListener('click', () => {
    setToken('');
    say('Token forgotten in this tab.', 'ok');
  });
  window.addEventListener('hashchange', () => {
    const key = keyFromHash();
    if (key !== null && key !== doc.key) openKey(key, { focusEditor: false });
  });
  filterKeys();
  const key = keyFromHash();
  if (key !== null) openKey(key, { focusEditor: false });
  document.body.dataset.ready = 'true';
}

start();
