// The web console in a real browser against the real server: what a person does with it, checked
// through the other door (the gRPC CLI). Every wait is bounded; no timing is asserted.
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const h = require('../harness');

let browser;
let shared; // the server test.sh started (JSONKV_ADDR), or one of our own
let own = null;

before(async () => {
  browser = await h.launchBrowser();
  if (process.env.JSONKV_ADDR) {
    const addr = process.env.JSONKV_ADDR.replace(/^https?:\/\//, '');
    shared = { addr, url: `http://${addr}/` };
  } else {
    own = await h.Server.start();
    shared = own;
  }
});

after(async () => {
  await browser?.close();
  await own?.dispose();
});

/** Opens the console, runs fn, and keeps a screenshot of how the page ended, pass or fail. */
async function withConsole(name, baseUrl, opts, fn) {
  const c = await h.openConsole(browser, baseUrl, opts);
  try {
    await fn(c.page);
    assert.deepEqual(c.problems, [], 'the page logged errors');
  } finally {
    await h.screenshot(c.page, name).catch(() => {});
    await c.context.close();
  }
}

const keysShown = (page) => page.locator('[data-testid=key-item]').evaluateAll((els) => els.map((e) => e.dataset.key));

async function waitForKeys(page, expected) {
  await page.waitForFunction((want) => {
    const got = [...document.querySelectorAll('[data-testid=key-item]')].map((e) => e.dataset.key);
    return JSON.stringify(got) === JSON.stringify(want);
  }, expected);
}

async function filter(page, prefix) {
  await page.fill('#prefix', prefix);
  await page.press('#prefix', 'Enter');
}

async function openKey(page, key) {
  await filter(page, key);
  await page.locator(`[data-testid=key-item][data-key="${key}"]`).click();
  await page.waitForFunction((k) => !document.getElementById('doc-form').hidden
    && document.getElementById('doc-key').textContent === k, key);
}

/** The live panel's changes as [type, key, revision] rows, in the order shown. */
const liveRows = (page) => page.locator('[data-testid=live-event]').evaluateAll((els) =>
  els.map((e) => [e.dataset.type, e.dataset.key, Number(e.dataset.revision)]));

async function waitForLiveCount(page, n) {
  await page.waitForFunction((want) => document.querySelectorAll('[data-testid=live-event]').length >= want, n);
}

/** The live panel's changes as [type, key, revision, view change] rows, in the order shown. */
const liveViewRows = (page) => page.locator('[data-testid=live-event]').evaluateAll((els) =>
  els.map((e) => [e.dataset.type, e.dataset.key, Number(e.dataset.revision),
    e.dataset.viewChange ?? null, e.querySelector('[data-testid=live-view-change]')?.textContent ?? null]));

async function startWatch(page, prefix, filter = '') {
  await page.check('#watch-mode-prefix');
  await page.fill('#watch-target', prefix);
  await page.fill('#watch-filter', filter);
  await page.click('#watch-toggle');
  await page.waitForSelector('[data-testid=live-snapshot]');
  await page.waitForSelector('#live-state[data-state="live"]');
}

test('the console lists the keys the CLI wrote, filtered by prefix and paged', async () => {
  const keys = [];
  for (let i = 0; i < 25; i += 1) {
    const key = `list/item-${String(i).padStart(2, '0')}`;
    await h.put(shared.addr, key, { i });
    keys.push(key);
  }
  await h.put(shared.addr, 'lisp/other', { not: 'listed' });
  await withConsole('list', shared.url, {}, async (page) => {
    // The first page of all keys, unfiltered, holds every key written so far.
    await page.waitForSelector('[data-testid=key-item]');
    const all = await keysShown(page);
    for (const k of [...keys, 'lisp/other']) assert.ok(all.includes(k), `${k} is listed`);

    await page.selectOption('#page-size', '20');
    await filter(page, 'list/');
    await waitForKeys(page, keys.slice(0, 20));
    assert.equal(await page.isDisabled('#prev-page'), true);
    await page.click('#next-page');
    await waitForKeys(page, keys.slice(20));
    assert.equal(await page.isDisabled('#next-page'), true);
    await page.click('#prev-page');
    await waitForKeys(page, keys.slice(0, 20));

    // By keyboard alone: arrows walk the list, Enter opens a key.
    await page.focus('[data-testid=key-item][data-key="list/item-00"]');
    await page.keyboard.press('ArrowDown');
    await page.keyboard.press('Enter');
    await page.waitForFunction(() => document.getElementById('doc-key').textContent === 'list/item-01');
    assert.deepEqual(JSON.parse(await page.inputValue('#doc-editor')), { i: 1 });
  });
});

test('a document edited in the console reads back through gRPC', async () => {
  // A number beyond what a JavaScript number holds must survive the round trip untouched.
  const created = await h.put(shared.addr, 'edit/doc', '{"n":1,"big":12345678901234567890}');
  await withConsole('edit', shared.url, {}, async (page) => {
    await openKey(page, 'edit/doc');
    assert.equal(await page.textContent('#meta-mod'), String(created));
    assert.equal(await page.textContent('#meta-version'), '1');
    assert.match(await page.inputValue('#doc-editor'), /"big": 12345678901234567890/);
    // Watch this one key while saving it: the save shows up as the key's next change.
    await page.click('#watch-doc');
    await page.waitForSelector('[data-testid=live-snapshot]');
    await page.waitForSelector('#live-state[data-state="live"]');

    await page.fill('#doc-editor', '{\n  "n": 2,\n  "big": 12345678901234567890,\n  "by": "console"\n}');
    await page.click('#save-doc');
    await page.waitForSelector('#status[data-kind="ok"]');
    assert.match(await page.textContent('#status'), /Saved “edit\/doc” at revision \d+/);
    const saved = Number(/revision (\d+)/.exec(await page.textContent('#status'))[1]);
    assert.ok(saved > created);
    await page.waitForFunction((r) => document.getElementById('meta-mod').textContent === String(r), saved);
    assert.equal(await page.textContent('#meta-version'), '2');
    await waitForLiveCount(page, 1);
    assert.deepEqual(await liveRows(page), [['put', 'edit/doc', saved]]);
  });
  assert.deepEqual(JSON.parse(await h.get(shared.addr, 'edit/doc')), { n: 2, big: 12345678901234567890, by: 'console' });
  assert.match(await h.get(shared.addr, 'edit/doc'), /"big":12345678901234567890[,}]/);
});

test('a save that lost the race shows both versions and lets the user choose', async () => {
  await h.put(shared.addr, 'conflict/doc', { owner: 'first' });
  await withConsole('conflict', shared.url, {}, async (page) => {
    await openKey(page, 'conflict/doc');
    const theirs = await h.put(shared.addr, 'conflict/doc', { owner: 'cli' });

    await page.fill('#doc-editor', '{"owner": "console"}');
    await page.click('#save-doc');
    await page.waitForSelector('#conflict:not([hidden])');
    assert.match(await page.textContent('#conflict-summary'), new RegExp(`now at revision ${theirs}\\b`));
    assert.match(await page.textContent('#conflict-theirs-title'), new RegExp(`revision ${theirs}\\b`));
    assert.deepEqual(JSON.parse(await page.textContent('#conflict-mine')), { owner: 'console' });
    assert.deepEqual(JSON.parse(await page.textContent('#conflict-theirs')), { owner: 'cli' });
    await h.screenshot(page, 'conflict-shown');
    // Nothing was written by the refused save.
    assert.deepEqual(JSON.parse(await h.get(shared.addr, 'conflict/doc')), { owner: 'cli' });

    // Overwrite: a save conditional on the revision that won.
    await page.click('#conflict-overwrite');
    await page.waitForSelector('#status[data-kind="ok"]');
    assert.deepEqual(JSON.parse(await h.get(shared.addr, 'conflict/doc')), { owner: 'console' });

    // A second race, settled the other way: take theirs, and the server keeps theirs.
    const again = await h.put(shared.addr, 'conflict/doc', { owner: 'cli again' });
    await page.fill('#doc-editor', '{"owner": "console again"}');
    await page.click('#save-doc');
    await page.waitForSelector('#conflict:not([hidden])');
    await page.click('#conflict-take');
    await page.waitForSelector('#doc-form:not([hidden])');
    assert.deepEqual(JSON.parse(await page.inputValue('#doc-editor')), { owner: 'cli again' });
    assert.equal(await page.textContent('#meta-mod'), String(again));
  });
  assert.deepEqual(JSON.parse(await h.get(shared.addr, 'conflict/doc')), { owner: 'cli again' });
});

test('bad JSON is refused in the browser and never sent', async () => {
  const before = await h.put(shared.addr, 'bad/doc', { good: true });
  await withConsole('bad-json', shared.url, {}, async (page) => {
    const writes = [];
    page.on('request', (r) => { if (r.method() !== 'GET') writes.push(`${r.method()} ${r.url()}`); });
    await openKey(page, 'bad/doc');
    await page.fill('#doc-editor', '{"good": false,, }');
    await page.click('#save-doc');
    await page.waitForFunction(() => document.getElementById('doc-error').textContent !== '');
    assert.match(await page.textContent('#doc-error'), /^Not valid JSON, nothing was sent: /);
    assert.equal(await page.textContent('#meta-mod'), String(before));

    await page.click('#new-key');
    await page.fill('#create-key', 'bad/new');
    await page.fill('#create-value', '{unquoted: 1}');
    await page.click('#create-submit');
    await page.waitForFunction(() => document.getElementById('create-error').textContent !== '');
    assert.match(await page.textContent('#create-error'), /^Not valid JSON, nothing was sent: /);
    assert.deepEqual(writes, []);
  });
  assert.deepEqual(JSON.parse(await h.get(shared.addr, 'bad/doc')), { good: true });
  assert.equal(await h.get(shared.addr, 'bad/new'), null);
  // The store's revision did not move: the next write is the very next revision.
  assert.equal(await h.put(shared.addr, 'bad/after', 1), before + 1);
});

test('keys are created without overwriting and deleted after a confirmation', async () => {
  await withConsole('create-delete', shared.url, {}, async (page) => {
    await page.click('#new-key');
    await page.fill('#create-key', 'made/by-console');
    await page.fill('#create-value', '{"made": "console"}');
    await page.click('#create-submit');
    await page.waitForFunction(() => document.getElementById('doc-key').textContent === 'made/by-console');
    assert.deepEqual(JSON.parse(await h.get(shared.addr, 'made/by-console')), { made: 'console' });

    // Creating it again is refused by the server (If-None-Match: *), and the page says so.
    await page.click('#new-key');
    await page.fill('#create-key', 'made/by-console');
    await page.fill('#create-value', '{"made": "twice"}');
    await page.click('#create-submit');
    await page.waitForFunction(() => /already exists/.test(document.getElementById('create-error').textContent));
    assert.deepEqual(JSON.parse(await h.get(shared.addr, 'made/by-console')), { made: 'console' });
    await page.click('#create-cancel');

    // Delete asks first; Cancel keeps the key.
    await page.click('#delete-doc');
    await page.waitForSelector('#confirm-dialog[open]');
    assert.match(await page.textContent('#confirm-text'), /made\/by-console/);
    await page.click('#confirm-cancel');
    await page.waitForFunction(() => !document.getElementById('confirm-dialog').open);
    assert.notEqual(await h.get(shared.addr, 'made/by-console'), null);

    await page.click('#delete-doc');
    await page.click('#confirm-ok');
    await page.waitForFunction(() => /^Deleted “made\/by-console”/.test(document.getElementById('status').textContent));
    assert.equal(await h.get(shared.addr, 'made/by-console'), null);
    await filter(page, 'made/');
    await page.waitForFunction(() => /No keys/.test(document.getElementById('keys-summary').textContent));
  });
});

test('the live panel shows every change to a prefix, in order, after its snapshot', async () => {
  const r0 = await h.put(shared.addr, 'watch/a', { seed: 1 });
  const r1 = await h.put(shared.addr, 'watch/b', { seed: 2 });
  await withConsole('watch', shared.url, {}, async (page) => {
    await startWatch(page, 'watch/');
    const snap = page.locator('[data-testid=live-snapshot]');
    assert.ok(Number(await snap.getAttribute('data-revision')) >= r1);
    assert.deepEqual(await snap.locator('li[data-key]').evaluateAll((els) => els.map((e) => e.dataset.key)),
      ['watch/a', 'watch/b']);
    assert.ok(r0 < r1);

    const expected = [];
    for (let i = 0; i < 20; i += 1) {
      const key = `watch/k${i % 7}`;
      if (i % 5 === 4) {
        expected.push(['delete', 'watch/a', await h.del(shared.addr, 'watch/a')]);
        expected.push(['put', 'watch/a', await h.put(shared.addr, 'watch/a', { back: i })]);
      } else {
        expected.push(['put', key, await h.put(shared.addr, key, { i })]);
      }
    }
    // One transaction, two keys, one revision: the first event comes without an id.
    const together = await h.putAll(shared.addr, [['watch/t1', { txn: 1 }], ['watch/t2', { txn: 2 }]]);
    expected.push(['put', 'watch/t1', together], ['put', 'watch/t2', together]);
    await h.put(shared.addr, 'watcher/outside', { not: 'watched' });
    await waitForLiveCount(page, expected.length);
    assert.deepEqual(await liveRows(page), expected);
    assert.equal(await page.locator('[data-testid=live-snapshot]').count(), 1);
  });
});

test('a filtered watch shows documents entering, changing inside and leaving its match, and nothing else', async () => {
  await h.put(shared.addr, 'orders/seed-open', { status: 'open', total: 1 });
  await h.put(shared.addr, 'orders/seed-closed', { status: 'closed', total: 2 });
  await withConsole('watch-filter', shared.url, {}, async (page) => {
    await startWatch(page, 'orders/', 'value.status == "open"');
    assert.match(await page.textContent('#live-state'), /^Watching prefix “orders\/” where value\.status == "open"\.$/);
    // The snapshot holds the matching documents only.
    const snap = page.locator('[data-testid=live-snapshot]');
    assert.equal(await snap.getAttribute('data-filter'), 'value.status == "open"');
    assert.deepEqual(await snap.locator('li[data-key]').evaluateAll((els) => els.map((e) => e.dataset.key)),
      ['orders/seed-open']);

    const expected = [];
    const row = (type, key, revision, change) => expected.push([type, key, revision, change, change]);
    row('put', 'orders/a', await h.put(shared.addr, 'orders/a', { status: 'open', total: 10 }), 'entered');
    row('put', 'orders/a', await h.put(shared.addr, 'orders/a', { status: 'open', total: 20 }), 'updated');
    // Changed so that it no longer matches: it leaves, as a delete of the view.
    row('delete', 'orders/a', await h.put(shared.addr, 'orders/a', { status: 'closed', total: 20 }), 'left');
    // Neither a document that never matched, nor its change, nor its deletion shows.
    await h.put(shared.addr, 'orders/b', { status: 'closed', total: 5 });
    await h.put(shared.addr, 'orders/b', { status: 'shipped', total: 5 });
    await h.del(shared.addr, 'orders/seed-closed');
    // Deleting a matching document makes it leave too.
    row('delete', 'orders/seed-open', await h.del(shared.addr, 'orders/seed-open'), 'left');
    // A last match after the others proves they were passed over, not merely late.
    row('put', 'orders/z', await h.put(shared.addr, 'orders/z', { status: 'open', total: 3 }), 'entered');
    await waitForLiveCount(page, expected.length);
    assert.deepEqual(await liveViewRows(page), expected);
    assert.equal(await page.locator('[data-testid=live-event][data-key="orders/b"]').count(), 0);
    assert.equal(await page.textContent('[data-testid=live-event][data-view-change=left] .ev-preview'),
      'no longer matches (changed or deleted)');
    // The filter cannot be changed mid-watch, and Stop gives it back.
    assert.equal(await page.isDisabled('#watch-filter'), true);
    await page.click('#watch-toggle');
    await page.waitForSelector('#live-state[data-state="idle"]');
    assert.equal(await page.isDisabled('#watch-filter'), false);
    // A key watch takes no filter (the server refuses one): the field is off for it.
    await page.check('#watch-mode-key');
    assert.equal(await page.isDisabled('#watch-filter'), true);
    await page.check('#watch-mode-prefix');
    assert.equal(await page.isDisabled('#watch-filter'), false);
  });
});

test('a filter the server refuses shows its message and position, and the page goes on working', async () => {
  await h.put(shared.addr, 'tickets/1', { status: 'open' });
  await h.put(shared.addr, 'tickets/2', { status: 'closed' });
  await withConsole('watch-filter-error', shared.url, {}, async (page) => {
    await page.check('#watch-mode-prefix');
    await page.fill('#watch-target', 'tickets/');
    await page.fill('#watch-filter', 'value.status ==');
    await page.press('#watch-filter', 'Enter');
    await page.waitForSelector('#live-state[data-state="error"]');
    // The server's own message, with the line:column of the fault: the end of the expression.
    assert.match(await page.textContent('#live-state'), /^Watch not started: invalid filter: 1:16: /);
    assert.equal(await page.getAttribute('#live-state', 'aria-live'), 'polite');
    assert.equal(await page.getAttribute('#watch-filter', 'aria-invalid'), 'true');
    assert.match(await page.getAttribute('#watch-filter', 'aria-describedby'), /\blive-state\b/);
    // Focus is back in the field, at the place the server named.
    assert.equal(await page.evaluate(() => document.activeElement.id), 'watch-filter');
    assert.equal(await page.evaluate(() => document.getElementById('watch-filter').selectionStart), 15);
    assert.equal(await page.textContent('#watch-toggle'), 'Watch');
    assert.equal(await page.locator('[data-testid=live-snapshot]').count(), 0);
    await h.screenshot(page, 'watch-filter-refused');

    // After an emoji the server's column (in characters) and the field's offset (in UTF-16 units)
    // differ: the mark still lands on the fault, the lone `=`.
    await page.fill('#watch-filter', 'key == "😀" && value.x = 1');
    assert.equal(await page.getAttribute('#watch-filter', 'aria-invalid'), null, 'typing clears the mark');
    await page.click('#watch-toggle');
    await page.waitForFunction(() => / 1:23: /.test(document.getElementById('live-state').textContent));
    assert.equal(await page.getAttribute('#live-state', 'data-state'), 'error');
    assert.match(await page.textContent('#live-state'), /^Watch not started: invalid filter: 1:23: Syntax error: /);
    assert.equal(await page.evaluate(() => {
      const f = document.getElementById('watch-filter');
      return f.value.slice(f.selectionStart, f.selectionEnd);
    }), '=');

    // Corrected, the same form watches.
    await page.fill('#watch-filter', 'value.status == "open"');
    await page.click('#watch-toggle');
    await page.waitForSelector('[data-testid=live-snapshot]');
    await page.waitForSelector('#live-state[data-state="live"]');
    assert.equal(await page.getAttribute('#watch-filter', 'aria-invalid'), null);
    assert.deepEqual(await page.locator('[data-testid=live-snapshot] li[data-key]').evaluateAll((els) => els.map((e) => e.dataset.key)),
      ['tickets/1']);

    // The key list's where filter: refused with its position, then applied.
    await filter(page, 'tickets/');
    await waitForKeys(page, ['tickets/1', 'tickets/2']);
    await page.fill('#where', 'value.status == "open" || nosuch');
    await page.press('#where', 'Enter');
    await page.waitForFunction(() => document.getElementById('keys-summary').dataset.kind === 'error');
    assert.match(await page.textContent('#keys-summary'),
      /^The server refused the where filter: invalid filter: 1:27: unknown name "nosuch"/);
    assert.equal(await page.evaluate(() => document.getElementById('where').selectionStart), 26);
    assert.equal(await page.getAttribute('#where', 'aria-invalid'), 'true');
    assert.equal(await page.locator('[data-testid=key-item]').count(), 0);
    await page.fill('#where', 'value.status == "closed"');
    await page.press('#where', 'Enter');
    await waitForKeys(page, ['tickets/2']);
    assert.equal(await page.getAttribute('#where', 'aria-invalid'), null);
    assert.match(await page.textContent('#keys-summary'), /^1 matching key under “tickets\/” where value\.status == "closed"\.$/);
    // Emptying the field lists every key again.
    await page.fill('#where', '');
    await waitForKeys(page, ['tickets/1', 'tickets/2']);
  });
});

test('a watch resumes after the server restarts, losing and repeating nothing', async () => {
  const server = await h.Server.start();
  try {
    await withConsole('resume', server.url, {}, async (page) => {
      await startWatch(page, 'r/');
      const expected = [];
      const write = async (n) => {
        for (let i = 0; i < n; i += 1) {
          const key = `r/${expected.length}`;
          expected.push(['put', key, await h.put(server.addr, key, { n: expected.length })]);
        }
      };
      await write(5);
      await waitForLiveCount(page, 5);
      const lastSeen = expected.at(-1)[2];

      await server.stop();
      await page.waitForSelector('#live-state[data-state="reconnecting"]');
      await page.waitForFunction((r) => [...document.querySelectorAll('[data-testid=live-notice]')]
        .some((e) => e.textContent === `Connection lost; resuming after revision ${r}.`), lastSeen);

      await server.run();
      // Written before the console has reconnected (its backoff is still waiting), so only a
      // resume from the last id delivers them.
      await write(5);
      await page.waitForFunction((r) => [...document.querySelectorAll('[data-testid=live-notice]')]
        .some((e) => e.textContent.startsWith(`Resumed after revision ${r}`)), lastSeen);
      await page.waitForSelector('#live-state[data-state="live"]');
      await write(5);
      await waitForLiveCount(page, expected.length);
      const rows = await liveRows(page);
      assert.deepEqual(rows, expected);
      assert.equal(new Set(rows.map((r) => r[2])).size, rows.length, 'no revision shown twice');
      assert.equal(await page.locator('[data-testid=live-snapshot]').count(), 1, 'no second snapshot');
      const notices = await page.locator('[data-testid=live-notice]').evaluateAll((els) => els.map((e) => e.dataset.kind));
      assert.deepEqual(notices, ['lost', 'resumed']);
    });
  } finally {
    await server.dispose();
  }
});

test('a filtered watch resumes after a restart with its filter, still showing only matches', async () => {
  const server = await h.Server.start();
  try {
    await withConsole('resume-filter', server.url, {}, async (page) => {
      const watches = [];
      page.on('request', (r) => {
        const u = new URL(r.url());
        if (u.pathname === '/v1/watch') watches.push([u.searchParams.get('filter'), r.headers()['last-event-id'] ?? null]);
      });
      await startWatch(page, 'rf/', 'value.keep');
      const expected = [];
      const write = async (i) => {
        expected.push(['put', `rf/${i}`, await h.put(server.addr, `rf/${i}`, { keep: true }), 'entered', 'entered']);
        await h.put(server.addr, `rf/skip-${i}`, { keep: false });
      };
      await write(0);
      await waitForLiveCount(page, 1);
      const lastSeen = expected.at(-1)[2];

      await server.stop();
      await page.waitForSelector('#live-state[data-state="reconnecting"]');
      await server.run();
      await write(1);
      await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=live-notice]')]
        .some((e) => e.dataset.kind === 'resumed'));
      await write(2);
      await waitForLiveCount(page, expected.length);
      assert.deepEqual(await liveViewRows(page), expected);
      // Every connection asked for the same live query; the resumes, from an id no older than the
      // last event shown (a progress event may have moved it on past writes that did not match).
      assert.ok(watches.length >= 2, `${watches.length} watch requests`);
      assert.deepEqual(watches[0], ['value.keep', null]);
      for (const [filter, lastId] of watches.slice(1)) {
        assert.equal(filter, 'value.keep');
        assert.ok(Number(lastId) >= lastSeen, `resumed after ${lastId}, not before ${lastSeen}`);
      }
    });
  } finally {
    await server.dispose();
  }
});

test('a server with tokens gets one from a form, and a read token cannot write', async () => {
  const write = crypto.randomBytes(16).toString('hex');
  const read = crypto.randomBytes(16).toString('hex');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsonkv-browser-tokens-'));
  const file = path.join(dir, 'tokens');
  fs.writeFileSync(file, `# browser suite\nwrite ${write}\nread ${read}\n`);
  const server = await h.Server.start(['--auth-tokens', file]);
  try {
    await h.put(server.addr, 'secret/doc', { hidden: true }, { token: write });
    await withConsole('token', server.url, {}, async (page) => {
      await page.waitForSelector('#auth-dialog[open]');
      assert.equal(await page.locator('[data-testid=key-item]').count(), 0);

      await page.fill('#auth-token', 'not-a-token');
      await page.click('#auth-submit');
      await page.waitForFunction(() => /refused/.test(document.getElementById('auth-error').textContent));
      assert.ok(await page.isVisible('#auth-dialog'));

      await page.fill('#auth-token', write);
      await page.press('#auth-token', 'Enter');
      await waitForKeys(page, ['secret/doc']);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('jsonkv.token')), write);
      assert.equal(await page.evaluate(() => localStorage.length), 0);

      // A read token: reading works, a save is refused with a 403 the page explains.
      await page.click('#forget-token');
      assert.equal(await page.evaluate(() => sessionStorage.getItem('jsonkv.token')), null);
      await page.reload();
      await page.waitForSelector('#auth-dialog[open]');
      await page.fill('#auth-token', read);
      await page.click('#auth-submit');
      await openKey(page, 'secret/doc');
      await page.fill('#doc-editor', '{"hidden": false}');
      await page.click('#save-doc');
      await page.waitForFunction(() => /lacks the right/.test(document.getElementById('status').textContent));
    });
    assert.deepEqual(JSON.parse(await h.get(server.addr, 'secret/doc', { token: read })), { hidden: true });
  } finally {
    await server.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('at phone width the console stacks into one column without scrolling sideways', async () => {
  await h.put(shared.addr, 'phone/a-rather-long-key-name-that-must-wrap-instead-of-widening-the-page', {
    text: 'a long value '.repeat(20),
  });
  await withConsole('phone', shared.url, { viewport: { width: 390, height: 844 } }, async (page) => {
    await openKey(page, 'phone/a-rather-long-key-name-that-must-wrap-instead-of-widening-the-page');
    await startWatch(page, 'phone/');
    const widths = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      client: document.documentElement.clientWidth,
    }));
    assert.ok(widths.scroll <= widths.client, `page is ${widths.scroll}px wide in a ${widths.client}px viewport`);
    const keys = await page.locator('#keys-panel').boundingBox();
    const docPanel = await page.locator('#doc-panel').boundingBox();
    assert.ok(docPanel.y >= keys.y + keys.height, 'the document panel sits below the key list');
    assert.ok(docPanel.width > 300, 'the document panel takes the width of the screen');
  });
});

test('a screenshot of the console at work', async () => {
  const docs = [
    ['app/config', { theme: 'dark', features: { search: true, export: false }, retries: 3 }],
    ['app/users/ada', { name: 'Ada Lovelace', role: 'admin', langs: ['en', 'fr'] }],
    ['app/users/alan', { name: 'Alan Turing', role: 'editor', langs: ['en'] }],
    ['app/users/grace', { name: 'Grace Hopper', role: 'editor', langs: ['en', 'cobol'] }],
  ];
  for (const [k, v] of docs) await h.put(shared.addr, k, v);
  await withConsole('console', shared.url, { viewport: { width: 1280, height: 860 } }, async (page) => {
    await filter(page, 'app/');
    await waitForKeys(page, docs.map(([k]) => k));
    await page.locator('[data-testid=key-item][data-key="app/users/ada"]').click();
    await page.waitForSelector('#doc-form:not([hidden])');
    await startWatch(page, 'app/users/');
    await h.put(shared.addr, 'app/users/alan', { name: 'Alan Turing', role: 'admin', langs: ['en'] });
    await h.put(shared.addr, 'app/users/linus', { name: 'Linus', role: 'viewer', langs: ['fi', 'en'] });
    await h.del(shared.addr, 'app/users/grace');
    await waitForLiveCount(page, 3);
    // The changes the live panel saw under the listed prefix refresh the list.
    await waitForKeys(page, ['app/config', 'app/users/ada', 'app/users/alan', 'app/users/linus']);
    const file = await h.screenshot(page, 'console-at-work');
    if (process.env.UPDATE_DOCS_SCREENSHOT === '1') {
      fs.copyFileSync(file, path.join(__dirname, '..', '..', '..', 'docs', 'console.png'));
    }
  });
});
