#!/usr/bin/env node
/**
 * Builds the native tfjs backend addon (native/ -> native/build/Release/wuerstchen_native.node) against
 * OpenBLAS, with node-gyp and the local Node headers. It is this package's `install` script, so it runs
 * wherever @wuerstchen/core is installed (a workspace or a user's project) and never fails the install:
 * without OpenBLAS, a compiler, or when the build breaks, it warns and exits 0, and the backend
 * selection falls back to wasm or cpu. `npm rebuild @wuerstchen/core --foreground-scripts` reruns it.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const NATIVE_DIR = path.join(__dirname, '..', 'native');
const MULTIARCH = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu' }[process.arch];

function skip(reason) {
  console.warn(`@wuerstchen/core: native backend not built: ${reason}; the wasm and cpu backends are unaffected`);
}

/** Header and library directories of OpenBLAS, preferring Debian's pthread variant; null if absent. */
function findOpenBlas() {
  const includes = [];
  const libs = [];
  for (const root of ['/usr', '/usr/local', '/opt/OpenBLAS']) {
    if (MULTIARCH) {
      includes.push(`${root}/include/${MULTIARCH}/openblas-pthread`, `${root}/include/${MULTIARCH}`);
      libs.push(`${root}/lib/${MULTIARCH}/openblas-pthread`, `${root}/lib/${MULTIARCH}`);
    }
    includes.push(`${root}/include/openblas`, `${root}/include`);
    libs.push(`${root}/lib64`, `${root}/lib`);
  }
  // OpenBLAS's cblas.h declares openblas_get_config; the reference BLAS's cblas.h does not.
  const include = includes.find((dir) => {
    const header = path.join(dir, 'cblas.h');
    return fs.existsSync(header) && fs.readFileSync(header, 'utf8').includes('openblas_get_config');
  });
  const libdir = libs.find((dir) => fs.existsSync(path.join(dir, 'libopenblas.so')));
  return include && libdir ? { include, libdir } : null;
}

/** npm's own node-gyp (npm exports its path when it runs scripts), else one installed as a package. */
function findNodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '../lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js'),
  ];
  const found = candidates.find((file) => file && fs.existsSync(file));
  if (found) return found;
  try {
    return require.resolve('node-gyp/bin/node-gyp.js');
  } catch {
    return null;
  }
}

/** The first of the build tools node-gyp's Makefiles call that is not on PATH, or null. */
function missingTool() {
  const tools = ['make', process.env.CXX || 'g++'];
  return tools.find((tool) => spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) ?? null;
}

/** The headers that ship next to this node binary (e.g. /usr/include/node), so nothing is downloaded. */
function nodedirArgs() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

function main() {
  if (process.platform !== 'linux') return skip(`only Linux builds are supported (this is ${process.platform})`);
  const blas = findOpenBlas();
  if (!blas) return skip('OpenBLAS not found (apt-get install libopenblas-dev, then npm rebuild @wuerstchen/core)');
  const tool = missingTool();
  if (tool) return skip(`${tool} not found (apt-get install build-essential, then npm rebuild @wuerstchen/core)`);
  const gyp = findNodeGyp();
  if (!gyp) return skip('node-gyp not found (it ships with npm)');
  const args = [
    gyp,
    'rebuild',
    ...nodedirArgs(),
    '--',
    `-Dopenblas_include=${blas.include}`,
    `-Dopenblas_libdir=${blas.libdir}`,
  ];
  const run = spawnSync(process.execPath, args, { cwd: NATIVE_DIR, encoding: 'utf8' });
  if (run.status === 0) {
    console.log(`@wuerstchen/core: native backend built against ${blas.libdir}/libopenblas.so`);
    return;
  }
  const log = `${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? run.error.message : ''}`;
  const tail = log
    .trim()
    .split('\n')
    .filter((line) => !line.startsWith('gyp info'))
    .slice(-25);
  console.warn(tail.join('\n'));
  skip('the build failed (log above)');
}

main();
