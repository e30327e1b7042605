// The browser suite's harness: headless Chromium through playwright-core, jsonkv servers the suite
// starts itself (on a port it can reuse across a restart), and the `jsonkv` CLI as the other
// client. It lives outside test/ so that `node --test` does not take it for a test file.
'use strict';

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const SERVER_BIN = process.env.JSONKV_SERVER_BIN;
const CLI_BIN = process.env.JSONKV_CLI_BIN;
// For work on the console without rebuilding the server (which embeds it): its files are served
// from this directory (server/console) instead, under the server's own response headers (CSP).
const CONSOLE_DIR = process.env.JSONKV_CONSOLE_DIR;
const CONSOLE_FILES = { '/': 'index.html', '/console/index.html': 'index.html', '/console/app.js': 'app.js', '/console/style.css': 'style.css' };
const ARTIFACTS = path.join(__dirname, 'artifacts');
const START_TIMEOUT_MS = 30000;
const STOP_TIMEOUT_MS = 15000;
const CLI_TIMEOUT_MS = 15000;

// The machine has no network: nothing Chromium would fetch on its own may be tried.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

function launchBrowser() {
  if (!fs.existsSync(CHROMIUM_BIN)) throw new Error(`no Chromium at ${CHROMIUM_BIN}; set CHROMIUM_BIN`);
  return chromium.launch({ executablePath: CHROMIUM_BIN, args: CHROMIUM_ARGS });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    sock.once('connect', () => { sock.destroy(); resolve(true); });
    sock.once('error', () => resolve(false));
  });
}

/**
 * One jsonkv-server process on a fixed port and data dir, so that a restart brings it back at
 * the same origin (the console reconnects to where it was loaded from) with the same data.
 */
class Server {
  constructor({ port, dataDir, args = [] }) {
    this.port = port;
    this.dataDir = dataDir;
    this.args = args;
    this.proc = null;
    this.log = path.join(dataDir, '..', `${path.basename(dataDir)}.log`);
  }

  static async start(args = []) {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsonkv-browser-data-'));
    // A free port can be taken again before the server binds it: then try another.
    let lastError;
    for (let i = 0; i < 3; i += 1) {
      const server = new Server({ port: await freePort(), dataDir, args });
      try {
        await server.run();
        return server;
      } catch (e) {
        lastError = e;
      }
    }
    throw lastError;
  }

  get addr() { return `127.0.0.1:${this.port}`; }
  get url() { return `http://${this.addr}/`; }

  async run() {
    if (!SERVER_BIN) throw new Error('JSONKV_SERVER_BIN is not set');
    const out = fs.openSync(this.log, 'a');
    const proc = spawn(SERVER_BIN, ['--listen', this.addr, '--data-dir', this.dataDir, ...this.args],
      { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    this.proc = proc;
    let exited = null;
    proc.once('exit', (code, signal) => { exited = { code, signal }; });
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`jsonkv-server exited during start-up (${JSON.stringify(exited)}): ${this.tail()}`);
      if (await canConnect(this.port)) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    proc.kill('SIGKILL');
    throw new Error(`jsonkv-server did not listen on ${this.addr} within ${START_TIMEOUT_MS} ms: ${this.tail()}`);
  }

  /** SIGTERM; the server's contract is to exit 0 on it, so anything else throws. */
  async stop() {
    const proc = this.proc;
    if (!proc) return;
    this.proc = null;
    if (proc.exitCode !== null || proc.signalCode !== null) {
      throw new Error(`jsonkv-server had already exited (${proc.exitCode ?? proc.signalCode}): ${this.tail()}`);
    }
    const done = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    proc.kill('SIGTERM');
    const timer = new Promise((resolve) => setTimeout(() => resolve(null), STOP_TIMEOUT_MS));
    const result = await Promise.race([done, timer]);
    if (result === null) {
      proc.kill('SIGKILL');
      throw new Error(`jsonkv-server ignored SIGTERM for ${STOP_TIMEOUT_MS} ms`);
    }
    if (result.code !== 0) throw new Error(`jsonkv-server exited ${JSON.stringify(result)} after SIGTERM: ${this.tail()}`);
  }

  async dispose() {
    try {
      await this.stop();
    } finally {
      fs.rmSync(this.dataDir, { recursive: true, force: true });
      fs.rmSync(this.log, { force: true });
    }
  }

  tail() {
    try {
      return fs.readFileSync(this.log, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '(no log)';
    }
  }
}

/** Runs the `jsonkv` CLI against addr; resolves to its stdout, rejects with its stderr. */
function cli(addr, args, { token, input } = {}) {
  if (!CLI_BIN) throw new Error('JSONKV_CLI_BIN is not set');
  const env = { ...process.env };
  delete env.JSONKV_TOKEN;
  if (token) env.JSONKV_TOKEN = token;
  return new Promise((resolve, reject) => {
    const child = execFile(CLI_BIN, ['--addr', `http://${addr}`, '--timeout', '10', ...args], { env, timeout: CLI_TIMEOUT_MS },
      (err, stdout, stderr) => {
        if (err) {
          err.message = `jsonkv ${args.join(' ')}: ${err.message}\n${stderr}`;
          err.stderr = stderr;
          reject(err);
        } else {
          resolve(stdout.trim());
        }
      });
    // A command that takes no input may exit before its stdin is closed; that EPIPE is no
    // failure (the exit status reports the command), so only a command given input must read it.
    child.stdin.on('error', (e) => {
      if (e.code !== 'EPIPE' || input !== undefined) reject(e);
    });
    if (input === undefined) child.stdin.end();
    else child.stdin.end(input);
  });
}

/** `jsonkv put`: resolves to the revision of the write. */
async function put(addr, key, value, opts) {
  const out = await cli(addr, ['put', key, typeof value === 'string' ? value : JSON.stringify(value)], opts);
  return Number(JSON.parse(out).revision);
}

/** `jsonkv del`: resolves to the revision of the delete. */
async function del(addr, key, opts) {
  return Number(JSON.parse(await cli(addr, ['del', key], opts)).revision);
}

/** `jsonkv txn` writing each [key, value] at one revision: resolves to that revision. */
async function putAll(addr, entries, opts) {
  const request = { success: entries.map(([key, value]) => ({ insert: { key, value_json: JSON.stringify(value) } })) };
  const out = await cli(addr, ['txn'], { ...opts, input: JSON.stringify(request) });
  return Number(JSON.parse(out).revision);
}

/** `jsonkv get`: resolves to the document's compact JSON text, or null if the key is absent. */
async function get(addr, key, opts) {
  try {
    return await cli(addr, ['get', key], opts);
  } catch (e) {
    if (e.code === 1 && /not.found/i.test(e.stderr)) return null;
    throw e;
  }
}

/**
 * A fresh browser context and page on the console at baseUrl, which fails the test on any
 * uncaught page error or console error (a Content-Security-Policy violation shows as one).
 */
async function openConsole(browser, baseUrl, { viewport = { width: 1280, height: 900 }, hash = '' } = {}) {
  const context = await browser.newContext({ viewport });
  context.setDefaultTimeout(15000);
  if (CONSOLE_DIR) await serveConsoleFrom(context, CONSOLE_DIR);
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A refused request (a 401, 404 or 412 the console handles) is logged by Chromium as an error.
    if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console error: ${m.text()}`);
  });
  await page.goto(baseUrl + hash);
  await page.waitForSelector('body[data-ready="true"]');
  return { context, page, problems };
}

/** Answers the console's own files from dir, keeping the headers the server sent with its copy. */
async function serveConsoleFrom(context, dir) {
  const fileFor = (url) => CONSOLE_FILES[new URL(url).pathname];
  await context.route((url) => fileFor(url.href) !== undefined, async (route) => {
    const response = await route.fetch();
    const headers = { ...response.headers() };
    delete headers['content-length'];
    await route.fulfill({ response, headers, body: fs.readFileSync(path.join(dir, fileFor(route.request().url()))) });
  });
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

module.exports = { launchBrowser, Server, cli, put, putAll, del, get, openConsole, screenshot, ARTIFACTS };
