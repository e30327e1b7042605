// Real jsonkv-server processes a test starts, stops and restarts on the same port and data
// directory ($JSONKV_SERVER_BIN), a listener that never answers (a hung server), and the
// certificates (a CA, a server's and a client's) the TLS tests need, made afresh on every run
// with node-forge so that no key is ever committed.
'use strict';

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { once } = require('node:events');
const { setTimeout: sleep } = require('node:timers/promises');
const forge = require('node-forge');

const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

async function freePort() {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  server.close();
  await once(server, 'close');
  return port;
}

function accepts(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

// One server: `--listen 127.0.0.1:<port>` and a data directory of its own (unless `args` say
// --in-memory), plus `args`. A restart keeps the port and the data directory.
class ServerProcess {
  constructor(args) {
    this.args = args;
    this.home = fs.mkdtempSync(path.join(os.tmpdir(), 'jsonkv-node-server-'));
    this.log = path.join(this.home, 'server.log');
    this.port = 0;
    this.process = null;
  }

  get addr() {
    return `127.0.0.1:${this.port}`;
  }

  async start() {
    // A port from freePort may be taken again before the server binds it: try another.
    for (let attempt = 0; attempt < 3; attempt++) {
      this.port = await freePort();
      if (await this.spawn()) return this;
    }
    throw new Error(`jsonkv-server did not start; its log:\n${this.tail()}`);
  }

  async restart() {
    await this.stop();
    if (!(await this.spawn())) {
      throw new Error(`jsonkv-server did not start again:\n${this.tail()}`);
    }
  }

  async spawn() {
    const binary = process.env.JSONKV_SERVER_BIN;
    if (!binary) throw new Error('JSONKV_SERVER_BIN is not set: run the suite with test.sh');
    const dataDir = this.args.includes('--in-memory')
      ? []
      : ['--data-dir', path.join(this.home, 'data')];
    const out = fs.openSync(this.log, 'a');
    const child = spawn(binary, ['--listen', this.addr, ...dataDir, ...this.args], {
      stdio: ['ignore', out, out],
    });
    fs.closeSync(out);
    this.process = child;
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) return false;
      if (await accepts(this.port)) return true;
      await sleep(50);
    }
    return false;
  }

  // SIGTERM; the contract says the server then exits 0.
  async stop() {
    const child = this.process;
    this.process = null;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
    const [code, signal] = await exited;
    clearTimeout(timer);
    if (code !== 0) {
      throw new Error(`jsonkv-server exited ${code ?? signal}; its log:\n${this.tail()}`);
    }
  }

  tail() {
    return fs.readFileSync(this.log, 'utf8').slice(-4000);
  }

  async remove() {
    await this.stop();
    fs.rmSync(this.home, { recursive: true, force: true });
  }
}

// Starts a server that `t` stops when it ends.
async function startServer(t, ...args) {
  const server = new ServerProcess(args);
  t.after(() => server.remove());
  return server.start();
}

// A listener that accepts connections and never answers: a hung server.
async function blackHole(t) {
  const sockets = [];
  const server = net.createServer((socket) => sockets.push(socket));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.after(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  return `127.0.0.1:${server.address().port}`;
}

// PEM files in a temporary directory: the CA, the server's certificate (localhost, 127.0.0.1)
// and key, a client's certificate and key.
function makePki() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jsonkv-node-pki-'));
  const { pki } = forge;
  const caKeys = pki.rsa.generateKeyPair(2048);
  const caName = [{ name: 'commonName', value: 'jsonkv test CA' }];

  function issue(subject, keys, extensions) {
    const cert = pki.createCertificate();
    cert.publicKey = keys.publicKey;
    cert.serialNumber = `0${forge.util.bytesToHex(forge.random.getBytesSync(8))}`;
    cert.validity.notBefore = new Date(Date.now() - 3_600_000);
    cert.validity.notAfter = new Date(Date.now() + 86_400_000);
    cert.setSubject([{ name: 'commonName', value: subject }]);
    cert.setIssuer(caName);
    cert.setExtensions(extensions);
    cert.sign(caKeys.privateKey, forge.md.sha256.create());
    return cert;
  }

  const ca = issue('jsonkv test CA', caKeys, [
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, digitalSignature: true, critical: true },
  ]);
  const serverKeys = pki.rsa.generateKeyPair(2048);
  const server = issue('localhost', serverKeys, [
    {
      name: 'subjectAltName',
      altNames: [
        { type: 2, value: 'localhost' },
        { type: 7, ip: '127.0.0.1' },
      ],
    },
    { name: 'extKeyUsage', serverAuth: true },
  ]);
  const clientKeys = pki.rsa.generateKeyPair(2048);
  const client = issue('alice', clientKeys, [{ name: 'extKeyUsage', clientAuth: true }]);

  const write = (name, text) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, text);
    return file;
  };
  return {
    dir,
    ca: write('ca.pem', pki.certificateToPem(ca)),
    serverCert: write('server.pem', pki.certificateToPem(server)),
    serverKey: write('server.key', pki.privateKeyToPem(serverKeys.privateKey)),
    clientCert: write('client.pem', pki.certificateToPem(client)),
    clientKey: write('client.key', pki.privateKeyToPem(clientKeys.privateKey)),
  };
}

module.exports = { freePort, startServer, blackHole, makePki };
