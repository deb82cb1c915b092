#!/usr/bin/env node
'use strict';
/**
 * `npm run bench [-- options]`: one JSON line per measurement on stdout, progress on stderr.
 *
 *   npm run bench                          all measurements, default backend (native if built, else wasm)
 *   npm run bench -- matmul conv           only names containing "matmul" or "conv"
 *   npm run bench -- --backend wasm        cpu | wasm | native | all | a comma list (cpu,wasm)
 *   npm run bench -- --torch               also run bench/torch_reference.py for each measurement, interleaved
 *   npm run bench -- --torch-only          only the PyTorch reference
 *   npm run bench -- --max-seconds 600     skip a measurement whose warm-up + 1 run is estimated to take longer
 *   npm run bench -- --repeats 5           fixed number of timed runs (default: by warm-up time)
 *   npm run bench -- --wait-idle 300       before each measurement wait (up to 300 s) until the other processes
 *                                          on the machine use < 0.15 cores; every record gets other_load_cores
 *   npm run bench -- --profile             one extra run under tf.profile: time per kernel (stderr, and kernel_ms)
 *   npm run bench -- --passes 3            run the whole selection 3 times, interleaved (pass 1 of every
 *                                          measurement and backend, then pass 2, …); the table shows medians
 *   npm run bench -- --under-load          keep one CPU-bound process running beside every measurement (torch's
 *                                          too), to see how each side copes with a busy machine; records get
 *                                          under_load: 1
 *   npm run bench -- --list                print the measurement names and shapes
 *   npm run bench -- --python /usr/bin/python3   interpreter for --torch (default: first with torch of $PYTHON, python3, /usr/bin/python3)
 *
 * Each measurement runs in its own process (bench/worker.js; the torch script likewise), so
 * peak_rss_mb is that measurement's own high-water mark (it includes node + tfjs, ~100 MB).
 */
const fs = require('fs');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const { MEASUREMENTS } = require('./measurements');

const ROOT = path.join(__dirname, '..');

function usage() {
  const lines = require('fs').readFileSync(__filename, 'utf8').split('\n');
  const start = lines.findIndex((l) => l.includes('npm run bench [-- options]'));
  return lines
    .slice(
      start,
      lines.findIndex((l, i) => i > start && l.startsWith(' */')),
    )
    .map((l) => l.replace(/^ \* ?/, ''))
    .join('\n');
}

function parseArgs(argv) {
  const opts = {
    filters: [],
    backend: null,
    torch: false,
    torchOnly: false,
    maxSeconds: 600,
    repeats: null,
    list: false,
    python: null,
    waitIdle: 0,
    profile: false,
    passes: 1,
    underLoad: false,
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (a.includes('=')) return a.slice(a.indexOf('=') + 1);
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    const key = a.split('=')[0];
    if (key === '--backend') opts.backend = next();
    else if (key === '--torch') opts.torch = true;
    else if (key === '--torch-only') opts.torchOnly = opts.torch = true;
    else if (key === '--max-seconds') opts.maxSeconds = Number(next());
    else if (key === '--repeats') opts.repeats = Number(next());
    else if (key === '--list') opts.list = true;
    else if (key === '--profile') opts.profile = true;
    else if (key === '--under-load') opts.underLoad = true;
    else if (key === '--passes') opts.passes = Number(next());
    else if (key === '--wait-idle') opts.waitIdle = Number(next());
    else if (key === '--python') opts.python = next();
    else if (key === '--help' || key === '-h') {
      process.stderr.write(usage() + '\n');
      process.exit(0);
    } else if (a.startsWith('--')) throw new Error(`unknown option ${a}\n\n${usage()}`);
    else opts.filters.push(a);
  }
  if (!Number.isInteger(opts.passes) || opts.passes < 1) throw new Error(`--passes must be a positive integer`);
  return opts;
}

function nativeAvailable() {
  try {
    return require(path.join(ROOT, 'packages/core/dist/backends/native.js')).nativeAvailable();
  } catch {
    return false;
  }
}

function resolveBackends(spec) {
  const native = nativeAvailable();
  if (!spec) return [native ? 'native' : 'wasm'];
  const list =
    spec === 'all'
      ? ['cpu', 'wasm', ...(native ? ['native'] : [])]
      : spec
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean);
  for (const b of list) {
    if (!['cpu', 'wasm', 'native', 'tensorflow'].includes(b))
      throw new Error(`unknown backend "${b}" (cpu, wasm, native, all)`);
  }
  return list;
}

function findPython(explicit) {
  const candidates = explicit
    ? [explicit]
    : [process.env.PYTHON, 'python3', '/usr/bin/python3', 'python'].filter(Boolean);
  for (const py of candidates) {
    const r = spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' });
    if (r.status === 0) return py;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------
// Machine load: busy CPU time of the whole machine from /proc/stat (USER_HZ = 100 on Linux)

const HZ = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100;

/** Busy CPU-seconds of the whole machine since boot, or null where /proc/stat is missing. */
function machineBusySeconds() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3] - f[4]) / HZ; // minus idle and iowait
  } catch {
    return null;
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Wait up to maxSeconds for the machine to be idle (< 0.15 busy cores over 3 s); returns the last reading. */
async function waitIdle(maxSeconds) {
  const deadline = Date.now() + maxSeconds * 1000;
  let busy = null;
  let announced = false;
  for (;;) {
    const b0 = machineBusySeconds();
    const t0 = Date.now();
    await sleep(3000);
    const b1 = machineBusySeconds();
    if (b0 == null || b1 == null) return null;
    busy = (b1 - b0) / ((Date.now() - t0) / 1000);
    if (busy < 0.15 || Date.now() > deadline) break;
    if (!announced)
      process.stderr.write(`bench: waiting for the machine to go idle (${busy.toFixed(2)} cores busy)…\n`);
    announced = true;
  }
  if (announced) process.stderr.write(`bench: ${busy.toFixed(2)} cores busy, going on\n`);
  return busy;
}

/** Run a child, pass its stderr through, return the JSON lines it printed on stdout. With `underLoad`, a busy
 *  loop in another process runs for as long as the child does. */
function runChild(cmd, argv, timeoutSeconds, fallback, underLoad) {
  return new Promise((resolve) => {
    const load = underLoad ? spawn(process.execPath, ['-e', 'for (;;);'], { stdio: 'ignore' }) : null;
    const busy0 = machineBusySeconds();
    const t0 = Date.now();
    const child = spawn(cmd, argv, { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    let timedOut = false;
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutSeconds * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      load?.kill('SIGKILL');
      const records = out
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => {
          try {
            return JSON.parse(l);
          } catch {
            return null;
          }
        })
        .filter((r) => r && r.name);
      const busy1 = machineBusySeconds();
      const wall = (Date.now() - t0) / 1000;
      for (const r of records) {
        // CPU the rest of the machine used meanwhile, in cores (0 = quiet; this box has 2)
        if (busy0 != null && busy1 != null && r.cpu_seconds != null)
          r.other_load_cores = Number(Math.max(0, (busy1 - busy0 - r.cpu_seconds) / wall).toFixed(2));
        if (underLoad) r.under_load = 1;
      }
      if (records.length) return resolve(records);
      const why = timedOut
        ? `killed after ${timeoutSeconds} s`
        : signal
          ? `process crashed with signal ${signal} before printing a result${signal === 'SIGKILL' ? ' (killed; out of memory?)' : ''}`
          : `process ended with exit code ${code} and no result`;
      resolve([{ ...fallback, seconds: null, gflops: null, peak_rss_mb: null, skipped: why }]);
    });
  });
}

const fmt = (x) => (x == null ? '–' : x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(4));

const median = (xs) => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 ? v[(v.length - 1) / 2] : (v[v.length / 2 - 1] + v[v.length / 2]) / 2;
};

/** One row per measurement: each backend's time (the median over passes) and its ratio to torch's; a ratio is
 *  the median of the per-pass ratios, so that both sides of each ratio come from the same pass. */
function summary(records, backends, torch) {
  const cols = [...backends, ...(torch ? ['torch'] : [])];
  const rows = [['name', ...cols.map((c) => `${c} s`), ...(torch ? backends.map((b) => `${b}/torch`) : [])]];
  const names = [...new Set(records.map((r) => r.name))];
  for (const n of names) {
    const timed = (b) => records.filter((r) => r.name === n && r.backend === b && r.seconds);
    const sec = (b) => {
      const rs = records.filter((r) => r.name === n && r.backend === b);
      return !rs.length ? '' : timed(b).length ? fmt(median(timed(b).map((r) => r.seconds))) : 'skip';
    };
    const ratios = torch
      ? backends.map((b) => {
          const pairs = timed(b)
            .map((r) => [r, timed('torch').find((t) => t.pass === r.pass)])
            .filter(([, t]) => t);
          return pairs.length ? `${median(pairs.map(([r, t]) => r.seconds / t.seconds)).toFixed(2)}×` : '–';
        })
      : [];
    rows.push([n, ...cols.map(sec), ...ratios]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => String(c).padEnd(widths[i])).join('  ')).join('\n');
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const selected = MEASUREMENTS.filter((m) => !opts.filters.length || opts.filters.some((f) => m.name.includes(f)));
  if (opts.list) {
    for (const m of MEASUREMENTS) process.stdout.write(`${m.name}\t${m.shape}\n`);
    return;
  }
  if (!selected.length) throw new Error(`no measurement matches ${opts.filters.join(', ')}; --list shows the names`);
  const backends = opts.torchOnly ? [] : resolveBackends(opts.backend);
  let python = null;
  if (opts.torch) {
    python = findPython(opts.python);
    if (!python) {
      process.stderr.write(
        'bench: --torch: no python with torch found (apt-get install -y python3-torch libopenblas0-pthread); skipping torch\n',
      );
    }
  }
  process.stderr.write(
    `bench: ${selected.length} measurement(s) on ${[...backends, ...(python ? [`torch (${python})`] : [])].join(', ') || 'nothing'}; ` +
      `max ${opts.maxSeconds} s each\n`,
  );
  const timeout = 2 * opts.maxSeconds + 900;
  const common = [
    '--max-seconds',
    String(opts.maxSeconds),
    ...(opts.repeats ? ['--repeats', String(opts.repeats)] : []),
  ];
  const jsOnly = opts.profile ? ['--profile', '1'] : [];
  const records = [];
  const print = (rs) => {
    for (const r of rs) {
      records.push(r);
      process.stdout.write(JSON.stringify(r) + '\n');
    }
  };
  const tag = (pass) => (rs) => rs.map((r) => ({ ...r, ...(opts.passes > 1 ? { pass } : {}) }));
  for (let pass = 1; pass <= opts.passes; pass++) {
    const of = opts.passes > 1 ? ` (pass ${pass}/${opts.passes})` : '';
    for (const m of selected) {
      for (const b of backends) {
        if (opts.waitIdle) await waitIdle(opts.waitIdle);
        process.stderr.write(`bench: ${m.name} on ${b}${of}…\n`);
        const argv = [path.join(__dirname, 'worker.js'), '--name', m.name, '--backend', b, ...common, ...jsOnly];
        const fallback = { name: m.name, backend: b, shape: m.shape };
        print(tag(pass)(await runChild(process.execPath, argv, timeout, fallback, opts.underLoad)));
      }
      if (python && m.torch !== false) {
        if (opts.waitIdle) await waitIdle(opts.waitIdle);
        process.stderr.write(`bench: ${m.name} on torch${of}…\n`);
        const argv = [path.join(__dirname, 'torch_reference.py'), '--only', m.name, ...common];
        const fallback = { name: m.name, backend: 'torch', shape: m.shape };
        print(tag(pass)(await runChild(python, argv, timeout, fallback, opts.underLoad)));
      }
    }
  }
  process.stderr.write('\n' + summary(records, backends, !!python) + '\n');
}

main().catch((e) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exit(1);
});
