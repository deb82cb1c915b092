#!/usr/bin/env node
/**
 * Builds the native tfjs backend addon (native/ -> native/build/Release/wuerstchen_native.node) against
 * OpenBLAS, and oneDNN 2.x for the convolutions when its headers and library are present (WUERSTCHEN_DNNL=0
 * builds without it), with node-gyp and the local Node headers. It is this package's `install` script, so it runs
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

/**
 * Header and library directories of oneDNN 2.x built with OpenMP (Debian's libdnnl-dev), or a reason why
 * not. dnnl_conv.cc uses the 2.x API (v3 removed operation descriptors) and sizes OpenMP's thread team.
 */
function findDnnl() {
  if (process.env.WUERSTCHEN_DNNL === '0') return { reason: 'WUERSTCHEN_DNNL=0' };
  const roots = ['/usr', '/usr/local', '/opt/dnnl'];
  const include = roots.map((r) => `${r}/include`).find((dir) => fs.existsSync(path.join(dir, 'oneapi/dnnl/dnnl.hpp')));
  const libs = roots.flatMap((r) => [...(MULTIARCH ? [`${r}/lib/${MULTIARCH}`] : []), `${r}/lib64`, `${r}/lib`]);
  const libdir = libs.find((dir) => fs.existsSync(path.join(dir, 'libdnnl.so')));
  if (!include || !libdir) return { reason: 'oneDNN not found (apt-get install libdnnl-dev enables it)' };
  const header = (name) => fs.readFileSync(path.join(include, 'oneapi/dnnl', name), 'utf8');
  const major = /#define DNNL_VERSION_MAJOR (\d+)/.exec(header('dnnl_version.h'))?.[1];
  if (major !== '2') return { reason: `oneDNN ${major ?? '?'}.x found; only 2.x is supported` };
  if (!/#define DNNL_CPU_RUNTIME DNNL_RUNTIME_OMP\b/.test(header('dnnl_config.h'))) {
    return { reason: 'oneDNN is not built with OpenMP' };
  }
  return { include, libdir };
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
  const dnnl = findDnnl();
  const args = [
    gyp,
    'rebuild',
    ...nodedirArgs(),
    '--',
    `-Dopenblas_include=${blas.include}`,
    `-Dopenblas_libdir=${blas.libdir}`,
    ...(dnnl.libdir ? [`-Ddnnl_include=${dnnl.include}`, `-Ddnnl_libdir=${dnnl.libdir}`] : []),
  ];
  const run = spawnSync(process.execPath, args, { cwd: NATIVE_DIR, encoding: 'utf8' });
  if (run.status === 0) {
    const convs = dnnl.libdir
      ? `, convolutions through ${dnnl.libdir}/libdnnl.so`
      : ` (without oneDNN: ${dnnl.reason})`;
    console.log(`@wuerstchen/core: native backend built against ${blas.libdir}/libopenblas.so${convs}`);
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
