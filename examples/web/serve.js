/**
 * `npm run web`: builds the demo page and serves it on 127.0.0.1 (read-only, GET and HEAD only). Served roots:
 *   /                          examples/web/index.html and examples/web/dist/ (the bundle)
 *   /models/wuerstchen-tiny/   the bundled tiny model (packages/wuerstchen/models/wuerstchen-tiny)
 *   /tfjs-wasm/                tfjs's wasm binaries (node_modules/@tensorflow/tfjs-backend-wasm/dist/*.wasm)
 * A request never reaches outside these roots: encoded slashes, "..", NUL and symbolic links out of a root are
 * refused. Usage: node examples/web/serve.js [--port N] (default 8080; 0 picks a free port).
 */
const fs = require('fs');
const http = require('http');
const path = require('path');
const { buildWeb } = require('./build');

const ROOT = path.resolve(__dirname, '../..');

/** URL prefix → folder, and which files of it may be served. */
const ROOTS = [
  {
    prefix: '/models/wuerstchen-tiny/',
    dir: path.join(ROOT, 'packages/wuerstchen/models/wuerstchen-tiny'),
    allow: () => true,
  },
  {
    prefix: '/tfjs-wasm/',
    dir: path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist'),
    allow: (rel) => rel.endsWith('.wasm'),
  },
  { prefix: '/', dir: __dirname, allow: (rel) => rel === 'index.html' || rel.startsWith('dist/') },
];

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript',
  '.map': 'application/json',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
};

/** The file a URL path names inside one of ROOTS, or undefined. */
function resolveFile(urlPath) {
  const root = ROOTS.find((r) => urlPath.startsWith(r.prefix));
  if (!root) return undefined;
  let parts;
  try {
    parts = urlPath.slice(root.prefix.length).split('/').map(decodeURIComponent);
  } catch {
    return undefined;
  }
  if (parts.some((p) => p === '..' || p === '.' || /[\\/\0]/.test(p))) return undefined;
  const rel = parts.join('/') || 'index.html';
  if (!root.allow(rel)) return undefined;
  const file = path.join(root.dir, rel);
  try {
    // a symbolic link may point anywhere: serve only what really lies inside the root
    const real = fs.realpathSync(file);
    if (!real.startsWith(fs.realpathSync(root.dir) + path.sep) || !fs.statSync(real).isFile()) return undefined;
    return real;
  } catch {
    return undefined;
  }
}

function handle(req, res) {
  const headers = {
    // cross-origin isolation lets tfjs use its multi-threaded wasm build (SharedArrayBuffer)
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Embedder-Policy': 'require-corp',
    'X-Content-Type-Options': 'nosniff',
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { ...headers, Allow: 'GET, HEAD' }).end();
    return;
  }
  const file = resolveFile(new URL(req.url, 'http://localhost').pathname);
  if (file === undefined) {
    res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('not found\n');
    return;
  }
  const size = fs.statSync(file).size;
  res.writeHead(200, {
    ...headers,
    'Content-Type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'Content-Length': size,
    'Cache-Control': 'no-cache',
  });
  if (req.method === 'HEAD') res.end();
  else fs.createReadStream(file).pipe(res);
}

/** Serves the roots on 127.0.0.1:`port`; resolves to the server and its URL. */
function startServer(port = 0) {
  const server = http.createServer(handle);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` }));
  });
}

module.exports = { startServer, resolveFile };

if (require.main === module) {
  const i = process.argv.indexOf('--port');
  const port = i >= 0 ? Number(process.argv[i + 1]) : 8080;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    console.error(`web: --port must be an integer from 0 to 65535, got ${JSON.stringify(process.argv[i + 1])}`);
    process.exit(2);
  }
  buildWeb()
    .then(() => startServer(port))
    .then(({ url }) => console.log(`web: serving the demo page at ${url} (Ctrl-C stops)`))
    .catch((err) => {
      console.error(`web: ${err.message}`);
      process.exit(1);
    });
}
