/**
 * The packages as a user gets them: `npm pack` the three (each builds itself first, in `prepack`),
 * install the tarballs into a fresh project without the network (`npm ci --offline` on a lock made
 * from the repository's own), and generate an image there with the bundled model. The addon is
 * built by @wuerstchen/core's own install step: where that step reports a build, the backend must
 * be "native"; where it cannot build (no OpenBLAS or compiler) it must say why, and generation falls
 * back to wasm. A build is required under CI, and wherever the repository's own addon is built.
 */
import { SpawnSyncReturns, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { nativeAvailable } from '../packages/core/src/backends/native';
import { LocalTarball, Lockfile, offlineLock } from './helpers/offline_lock';

const ROOT = path.resolve(__dirname, '..');
const PACKAGES = ['@wuerstchen/core', 'wuerstchen', '@wuerstchen/train'];
/** Every entry point of the exports maps (the `internal` ones serve the packages' own dependents). */
const ENTRIES = [
  '@wuerstchen/core',
  '@wuerstchen/core/native',
  '@wuerstchen/core/cli',
  '@wuerstchen/core/internal',
  'wuerstchen',
  'wuerstchen/cli',
  'wuerstchen/internal',
  '@wuerstchen/train',
  '@wuerstchen/train/cli',
  '@wuerstchen/train/internal',
];
const nativeRequired = nativeAvailable() || Boolean(process.env.CI) || process.env.WUERSTCHEN_REQUIRE_NATIVE === '1';

interface PackResult {
  name: string;
  version: string;
  filename: string;
  integrity: string;
  files: { path: string }[];
}

/** The environment without a backend choice, so that `auto` picks. */
const { WUERSTCHEN_BACKEND: _backend, ...ENV } = process.env;

function run(cmd: string, args: string[], cwd: string): SpawnSyncReturns<string> {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: ENV });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} (exit ${r.status}):\n${r.stdout}\n${r.stderr}`);
  return r;
}

let dir: string;
let packed: PackResult[];
let install: SpawnSyncReturns<string>;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wuerstchen-pack-'));
  const workspaces = PACKAGES.flatMap((p) => ['--workspace', p]);
  const pack = run('npm', ['pack', '--json', '--pack-destination', dir, ...workspaces], ROOT).stdout;
  // prepack's tsc may print before the JSON
  packed = JSON.parse(pack.slice(pack.search(/^\[/m))) as PackResult[];
  const local: LocalTarball[] = packed.map((p) => ({
    file: p.filename,
    integrity: p.integrity,
    manifest: JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', p.name, 'package.json'), 'utf8')),
  }));
  // a user's own tfjs, which the packages take as a peer
  const dependencies: Record<string, string> = { '@tensorflow/tfjs': '4.22.0' };
  for (const t of local) dependencies[t.manifest.name] = `file:${t.file}`;
  const repoLock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as Lockfile;
  // npm 12 runs a dependency's install script only when the project allows it (a local tarball is
  // named by its path); tfjs's core-js has a postinstall that only prints
  const core = local.find((t) => t.manifest.name === '@wuerstchen/core')!;
  const allowScripts = { [`file:${path.join(dir, core.file)}`]: true, 'core-js': false };
  fs.writeFileSync(
    path.join(dir, 'package.json'),
    JSON.stringify({ name: 'pack-install', private: true, dependencies, allowScripts }),
  );
  const registry = run('npm', ['config', 'get', 'registry'], ROOT).stdout.trim().replace(/\/?$/, '/');
  fs.writeFileSync(
    path.join(dir, 'package-lock.json'),
    JSON.stringify(offlineLock(repoLock, dependencies, local, registry)),
  );
  install = run('npm', ['ci', '--offline', '--no-audit', '--no-fund', '--foreground-scripts'], dir);
  expect(install.stderr).not.toMatch(/not yet covered by allowScripts/);
});

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

test('the tarballs hold the built code, the addon sources, the bundled model and the licence; no sources or test tooling', () => {
  const files = Object.fromEntries(packed.map((p) => [p.name, p.files.map((f) => f.path)]));
  const license = fs.readFileSync(path.join(ROOT, 'LICENSE'), 'utf8');
  for (const name of PACKAGES) {
    // npm packs no symlinks, so each package keeps a copy of the root LICENSE
    expect(fs.readFileSync(path.join(dir, 'node_modules', name, 'LICENSE'), 'utf8')).toBe(license);
    expect(files[name]).toEqual(
      expect.arrayContaining(['LICENSE', 'package.json', 'dist/index.js', 'dist/index.d.ts']),
    );
    expect(files[name].filter((f) => /^src\/|^test\/|golden|\.map$|tsbuildinfo/.test(f))).toEqual([]);
  }
  expect(files['@wuerstchen/core']).toEqual(
    expect.arrayContaining([
      'scripts/build-native.js',
      'native/binding.gyp',
      'native/src/addon.cc',
      'dist/backends/native.js',
    ]),
  );
  expect(files['@wuerstchen/core'].filter((f) => f.startsWith('native/build/'))).toEqual([]);
  expect(files.wuerstchen).toEqual(
    expect.arrayContaining(['bin/wuerstchen.js', 'models/wuerstchen-tiny/wuerstchen-prior/model_index.json']),
  );
  expect(files['@wuerstchen/train']).toContain('bin/wuerstchen-train.js');
});

test('one tfjs for everyone: no package brings its own copy', () => {
  const nested = PACKAGES.map((p) => path.join(dir, 'node_modules', p, 'node_modules', '@tensorflow'));
  expect(nested.filter((d) => fs.existsSync(d))).toEqual([]);
});

test('the CLIs answer --version and --help; only the exported entry points resolve', () => {
  expect(run('npx', ['--no', '--', 'wuerstchen', '--version'], dir).stdout).toBe('0.1.0\n');
  expect(run('npx', ['--no', '--', 'wuerstchen-train', '--version'], dir).stdout).toBe('0.1.0\n');
  expect(run('npx', ['--no', '--', 'wuerstchen-train', 'export', '--help'], dir).stdout).toMatch(
    /^usage: wuerstchen-train export/,
  );
  const probe = `for (const m of ${JSON.stringify([...ENTRIES, '@wuerstchen/core/dist/module.js'])}) {
    try { require.resolve(m); console.log(m, 'ok'); } catch (e) { console.log(m, e.code); }
  }`;
  expect(run(process.execPath, ['-e', probe], dir).stdout.trim().split('\n')).toEqual([
    ...ENTRIES.map((e) => `${e} ok`),
    '@wuerstchen/core/dist/module.js ERR_PACKAGE_PATH_NOT_EXPORTED',
  ]);
});

test('TypeScript finds the types of every entry point, with and without exports-aware resolution', () => {
  const source = ENTRIES.map((e, i) => `import * as m${i} from '${e}';`).join('\n');
  const uses = ENTRIES.map((_, i) => `m${i}`).join(', ');
  fs.writeFileSync(path.join(dir, 'use.ts'), `${source}\nexport const used = [${uses}];\n`);
  const tsc = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  for (const resolution of ['node16', 'node10']) {
    const module = resolution === 'node16' ? 'node16' : 'commonjs';
    const args = [
      '--noEmit',
      '--strict',
      '--skipLibCheck',
      '--module',
      module,
      '--moduleResolution',
      resolution,
      'use.ts',
    ];
    // --strict: an entry point without declarations would be an implicit `any`, an error
    run(process.execPath, [tsc, ...args], dir);
  }
});

test('generates an image with the bundled model, on the native backend where the install built it', () => {
  const installLog = install.stdout + install.stderr;
  const built = /@wuerstchen\/core: native backend built against /.test(installLog);
  if (nativeRequired) expect(installLog).toMatch(/@wuerstchen\/core: native backend built against /);
  else if (!built) expect(installLog).toMatch(/@wuerstchen\/core: native backend not built: /);
  const out = path.join(dir, 'x.png');
  const prompt = 'a large red circle in the middle on a blue background';
  const r = run('npx', ['--no', '--', 'wuerstchen', 'generate', '--prompt', prompt, '--out', out, '--seed', '1'], dir);
  const backend = /^wuerstchen: backend (\S+)$/m.exec(r.stderr)?.[1];
  expect(backend).toBe(built ? 'native' : 'wasm');
  expect(r.stderr).not.toMatch(/install our node backend/);
  const png = fs.readFileSync(out);
  expect(png.subarray(1, 4).toString()).toBe('PNG');
  // IHDR: width and height, big-endian, at bytes 16 and 20
  expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([64, 64]);
});
