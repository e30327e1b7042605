// Copies the repository's proto/ into this package before `npm pack` (prepack), and removes the
// copy after (postpack), so the tarball carries its contract while the source tree holds no
// duplicate of it. Run: node tools/bundle-proto.js [--remove]
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const bundled = path.resolve(__dirname, '..', 'proto');
const source = path.resolve(__dirname, '..', '..', '..', 'proto');

fs.rmSync(bundled, { recursive: true, force: true });
if (process.argv[2] !== '--remove') {
  if (!fs.existsSync(path.join(source, 'jsonkv', 'v1', 'jsonkv.proto'))) {
    console.error(`bundle-proto: no jsonkv/v1/jsonkv.proto under ${source}`);
    process.exit(1);
  }
  fs.cpSync(source, bundled, { recursive: true, filter: (p) => !p.endsWith('~') });
  console.error(`bundle-proto: copied ${source} into the package`);
}
