#!/usr/bin/env node
/**
 * Builds the native tfjs backend addon (packages/core/native -> build/Release/wuerstchen_native.node)
 * against OpenBLAS, with node-gyp and the local Node headers. Runs from the root `prepare` script, so it
 * never fails the install: without OpenBLAS, or when the build breaks, it says so and exits 0.
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const NATIVE_DIR = path.join(__dirname, '..', 'packages', 'core', 'native');
const MULTIARCH = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu', ppc64: 'powerpc64le-linux-gnu' }[process.arch];

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

/** The headers that ship next to this node binary (e.g. /usr/include/node), so nothing is downloaded. */
function nodedirArgs() {
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  return fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h')) ? [`--nodedir=${prefix}`] : [];
}

function main() {
  const blas = process.platform === 'linux' ? findOpenBlas() : null;
  if (!blas) {
    console.log('native backend skipped: OpenBLAS not found (apt-get install libopenblas-dev enables it)');
    return;
  }
  const gyp = findNodeGyp();
  if (!gyp) {
    console.log('native backend skipped: node-gyp not found (it ships with npm)');
    return;
  }
  const args = [gyp, 'rebuild', ...nodedirArgs(), '--',
    `-Dopenblas_include=${blas.include}`, `-Dopenblas_libdir=${blas.libdir}`];
  const run = spawnSync(process.execPath, args, { cwd: NATIVE_DIR, encoding: 'utf8' });
  if (run.status === 0) {
    console.log(`native backend built against ${blas.libdir}/libopenblas.so`);
    return;
  }
  const log = `${run.stdout ?? ''}${run.stderr ?? ''}${run.error ? run.error.message : ''}`;
  console.log(log.trim().split('\n').filter((line) => !line.startsWith('gyp info')).slice(-25).join('\n'));
  console.log('native backend build FAILED (see above); tfjs backends other than "native" are unaffected.');
}

main();
