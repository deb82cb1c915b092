/**
 * Browser builds (esbuild), from the TypeScript sources:
 *  - packages/wuerstchen/dist/browser/wuerstchen.mjs: the `wuerstchen` package as one ES module, with
 *    @tensorflow/tfjs left to the page (a peer dependency, as in Node);
 *  - examples/web/dist/app.js: the demo page with tfjs and its backends.
 * A Node built-in (fs, path, zlib, ...) imported by this project's code fails the build, naming the importer
 * (tfjs guards its own Node-only requires and maps them away in its package.json "browser" fields).
 * Prints the gzipped size of each bundle. Usage: node examples/web/build.js
 */
const esbuild = require('esbuild');
const path = require('path');
const zlib = require('zlib');
const fs = require('fs');
const { builtinModules } = require('module');

const ROOT = path.resolve(__dirname, '../..');

const BROWSER_ENTRIES = {
  '@wuerstchen/core': path.join(ROOT, 'packages/core/src/browser.ts'),
  '@wuerstchen/core/internal': path.join(ROOT, 'packages/core/src/internal.ts'),
  wuerstchen: path.join(ROOT, 'packages/wuerstchen/src/browser.ts'),
  // pngjs's own browser build (with its zlib port): the page writes the same PNG bytes as the CLI
  pngjs: path.join(ROOT, 'node_modules/pngjs/browser.js'),
};

/** Resolves the packages to their browser entries and refuses Node built-ins. */
const browserOnly = {
  name: 'browser-only',
  setup(build) {
    build.onResolve({ filter: /^[^./]/ }, (args) => {
      if (BROWSER_ENTRIES[args.path]) return { path: BROWSER_ENTRIES[args.path] };
      const name = args.path.replace(/^node:/, '');
      if (builtinModules.includes(name) && !args.importer.includes(`${path.sep}node_modules${path.sep}`)) {
        return {
          errors: [
            {
              text: `Node built-in "${args.path}" imported by ${path.relative(ROOT, args.importer)}: not on the browser path`,
            },
          ],
        };
      }
      return undefined;
    });
  },
};

const COMMON = {
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: true,
  plugins: [browserOnly],
  logLevel: 'warning',
};

const BUILDS = [
  {
    entryPoints: [BROWSER_ENTRIES.wuerstchen],
    outfile: path.join(ROOT, 'packages/wuerstchen/dist/browser/wuerstchen.mjs'),
    external: ['@tensorflow/tfjs', '@tensorflow/*'],
  },
  { entryPoints: [path.join(__dirname, 'main.ts')], outfile: path.join(__dirname, 'dist/app.js') },
];

async function buildWeb() {
  const sizes = {};
  for (const options of BUILDS) {
    await esbuild.build({ ...COMMON, ...options });
    sizes[path.relative(ROOT, options.outfile)] = zlib.gzipSync(fs.readFileSync(options.outfile), { level: 9 }).length;
  }
  return sizes;
}

module.exports = { buildWeb };

if (require.main === module) {
  buildWeb().then(
    (sizes) => {
      for (const [file, bytes] of Object.entries(sizes))
        console.log(`${file}: ${(bytes / 1024).toFixed(0)} KiB gzipped`);
    },
    (err) => {
      console.error(err.message);
      process.exit(1);
    },
  );
}
