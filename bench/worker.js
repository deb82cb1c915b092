#!/usr/bin/env node
'use strict';
/**
 * Runs ONE measurement on ONE backend in this (fresh) process and writes one JSON line to stdout,
 * so that peak_rss_mb (the process's maxRSS) belongs to that measurement alone.
 * Normally started by bench/run.js:  node bench/worker.js --name matmul --backend wasm [--max-seconds 600] [--repeats N]
 * Everything else (progress) goes to stderr.
 */
const path = require('path');
const util = require('util');
const os = require('os');

// stdout carries only the result line
for (const k of ['log', 'info', 'warn', 'debug']) console[k] = (...a) => process.stderr.write(util.format(...a) + '\n');

const ROOT = path.join(__dirname, '..');
const GiB = 1024 ** 3;
const WASM_HEAP_MAX = 4 * GiB;

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith('--')) {
      const [k, v] = a.includes('=') ? a.slice(2).split('=') : [a.slice(2), argv[++i]];
      out[k] = v;
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const name = args.name;
const backend = args.backend || 'wasm';
const maxSeconds = Number(args['max-seconds'] || 600);
const repeats = args.repeats ? Number(args.repeats) : null;
const profile = args.profile === '1';

const round = (x, d = 4) => (x == null ? null : Number(x.toPrecision(d)));
const log = (msg) => process.stderr.write(`[bench ${name}/${backend}] ${msg}\n`);

function emit(record) {
  const peak = process.resourceUsage().maxRSS / 1024; // KiB → MiB
  const def = require('./measurements').MEASUREMENTS.find((x) => x.name === name);
  const base = {
    name,
    backend,
    shape: record.shape ?? (def ? def.shape : null),
    seconds: null,
    gflops: null,
    peak_rss_mb: Math.round(peak),
  };
  const cpu = process.cpuUsage();
  const line = JSON.stringify({
    ...base,
    ...record,
    peak_rss_mb: Math.round(peak),
    cpu_seconds: Number(((cpu.user + cpu.system) / 1e6).toFixed(2)),
  });
  require('fs').writeSync(1, line + '\n');
}

/** Lazily loaded model code (packages/core and packages/wuerstchen dist, built by `npm run build`). */
const W = {
  get core() {
    return require(path.join(ROOT, 'packages/core/dist/index.js'));
  },
  get coreInternal() {
    return require(path.join(ROOT, 'packages/core/dist/internal.js'));
  },
  get common() {
    return require(path.join(ROOT, 'packages/wuerstchen/dist/models/common.js'));
  },
  get prior() {
    return require(path.join(ROOT, 'packages/wuerstchen/dist/models/prior.js'));
  },
  get diffnext() {
    return require(path.join(ROOT, 'packages/wuerstchen/dist/models/diffnext.js'));
  },
  get wuerstchen() {
    return require(path.join(ROOT, 'packages/wuerstchen/dist/index.js'));
  },
  get train() {
    return require(path.join(ROOT, 'packages/train/dist/index.js'));
  },
  get paella() {
    const file = path.join(ROOT, 'packages/wuerstchen/dist/models/paella_vq.js');
    try {
      return require(file);
    } catch (e) {
      if (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes('paella_vq')) return null;
      throw e;
    }
  },
};

/** Seconds f takes (a setup or run may be async: the pipelines are). */
async function time(f) {
  const t = process.hrtime.bigint();
  await f();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function threadsOf(tf, backendName) {
  if (backendName === 'native') {
    const info = require(path.join(ROOT, 'packages/core/dist/backends/native.js')).nativeInfo();
    // dnnl: the oneDNN version behind the convolutions, null for the OpenBLAS-only build
    return info ? { threads: info.threads, blas: `${info.blas} (core ${info.coreType})`, dnnl: info.dnnl } : {};
  }
  if (backendName === 'wasm') {
    try {
      return { threads: require('@tensorflow/tfjs-backend-wasm').getThreadsCount() };
    } catch {
      return {};
    }
  }
  if (backendName === 'cpu') return { threads: 1 };
  return {};
}

/**
 * One more run under tf.profile: time per kernel name (the cpu-based backends run kernels
 * synchronously, so each kernel's wall time is its cost). Prints the table to stderr and returns
 * the top kernels as { name: ms }.
 */
async function profileRun(tf, run) {
  const t0 = Date.now();
  const prof = await tf.profile(() => {
    run();
    return [];
  });
  const wall = Date.now() - t0;
  const { flopsFromProfile } = require('./flops');
  const agg = new Map();
  for (const k of prof.kernels) {
    if (k.name.endsWith('__op')) continue; // op scopes (e.g. fusedMatMul__op) wrap kernels listed on their own
    const a = agg.get(k.name) || { ms: 0, calls: 0, flops: 0 };
    a.ms += Number(k.kernelTimeMs) || 0;
    a.calls += 1;
    a.flops += flopsFromProfile([k]).total;
    agg.set(k.name, a);
  }
  const rows = [...agg.entries()].sort((x, y) => y[1].ms - x[1].ms);
  const total = rows.reduce((s, [, a]) => s + a.ms, 0);
  log(`profile: ${wall} ms wall, ${total.toFixed(0)} ms in ${prof.kernels.length} kernel calls`);
  for (const [k, a] of rows.slice(0, 15)) {
    const rate = a.flops ? `  ${(a.flops / 1e6 / a.ms).toFixed(1)} GFLOP/s` : '';
    log(
      `  ${k.padEnd(36)} ${a.ms.toFixed(1).padStart(9)} ms  ${((100 * a.ms) / total).toFixed(1).padStart(5)}%  ${String(a.calls).padStart(5)} calls${rate}`,
    );
  }
  return Object.fromEntries(rows.slice(0, 12).map(([k, a]) => [k, Number(a.ms.toFixed(1))]));
}

async function main() {
  const { MEASUREMENTS } = require('./measurements');
  const m = MEASUREMENTS.find((x) => x.name === name);
  if (!m) throw new Error(`unknown measurement "${name}"`);
  const loadAvg = round(os.loadavg()[0], 3);
  const started = Date.now();
  const common = { shape: m.shape, work_gflop: m.flops == null ? null : round(m.flops / 1e9, 5), load_avg_1m: loadAvg };

  const tf = require('@tensorflow/tfjs');
  // tfjs's "install the node backend" banner: the bench chooses its backends itself.
  tf.enableProdMode();
  const got = await W.core.useBackend(backend, { quiet: true });
  const info = threadsOf(tf, got);

  // 1. capability checks (nothing allocated yet)
  for (const k of m.kernels || []) {
    if (!tf.getKernel(k, got)) {
      return emit({ ...common, ...info, skipped: `kernel '${k}' is not registered for backend '${got}'` });
    }
  }
  if (got === 'wasm' && m.weightBytes) {
    const bytes = m.weightBytes(W);
    if (bytes > 0.75 * WASM_HEAP_MAX) {
      return emit({
        ...common,
        ...info,
        skipped: `fp32 weights alone are ${(bytes / GiB).toFixed(2)} GiB and the wasm heap is capped at 4 GiB (activations come on top); not attempted`,
      });
    }
  }

  // 2. estimate from a smaller run
  let estimate = null;
  if (m.probe && m.flops) {
    log(`probe: ${m.probe.what}`);
    const p = m.probe.setup(tf, W);
    let t = await time(p.run);
    if (t < 2) t = Math.min(t, await time(p.run));
    p.dispose();
    const perRun = (t * m.flops) / m.probe.flops;
    estimate = perRun;
    const total = 2 * perRun; // warm-up + one timed run
    const rate = m.probe.flops / 1e9 / t;
    log(`probe took ${t.toFixed(3)} s (${rate.toFixed(2)} GFLOP/s) → estimated ${perRun.toFixed(1)} s per run`);
    if (total > maxSeconds) {
      return emit({
        ...common,
        ...info,
        estimated_seconds: round(perRun, 3),
        skipped:
          `estimated ${Math.round(total)} s for warm-up + 1 timed run (${Math.round(perRun)} s per run, > --max-seconds ${maxSeconds}), ` +
          `extrapolated by FLOPs from ${m.probe.what}: ${t.toFixed(2)} s for ${(m.probe.flops / 1e9).toFixed(2)} GFLOP = ${rate.toFixed(2)} GFLOP/s`,
      });
    }
  }

  // 3. the measurement
  let ctx;
  const setupSeconds = await time(async () => {
    ctx = await m.setup(tf, W);
  });
  log(`setup ${setupSeconds.toFixed(2)} s; warm-up…`);
  const warm = await time(ctx.run);
  let n = repeats ?? (warm > 20 ? 1 : warm > 5 ? 3 : warm > 0.05 ? 5 : 20);
  const left = maxSeconds - (Date.now() - started) / 1000;
  if (repeats == null) n = Math.max(1, Math.min(n, Math.floor(left / warm)));
  log(`warm-up ${warm.toFixed(3)} s; timing ${n} run(s)`);
  const times = [];
  for (let i = 0; i < n; i++) {
    times.push(await time(ctx.run));
    if (warm > 5) log(`  run ${i + 1}/${n}: ${times[i].toFixed(3)} s`);
  }
  let kernelMs;
  if (profile) kernelMs = await profileRun(tf, ctx.run);
  ctx.dispose();
  const leaked = tf.memory().numTensors; // 0 unless the measured code leaks tensors
  const med = median(times);
  emit({
    ...common,
    seconds: round(med, 4),
    gflops: m.flops == null ? null : round(m.flops / 1e9 / med, 4),
    runs: n,
    min_seconds: round(Math.min(...times), 4),
    max_seconds: round(Math.max(...times), 4),
    warmup_seconds: round(warm, 4),
    setup_seconds: round(setupSeconds, 3),
    ...(estimate != null ? { estimated_seconds: round(estimate, 3) } : {}),
    ...(m.flopsNote ? { flops_note: m.flopsNote } : {}),
    ...info,
    leaked_tensors: leaked,
    ...(kernelMs ? { kernel_ms: kernelMs } : {}),
  });
}

main()
  .then(() => process.exit(0))
  .catch((e) => {
    log(e && e.stack ? e.stack : String(e));
    const msg = String((e && e.message) || e)
      .split('\n')[0]
      .slice(0, 400);
    const rss = Math.round(process.resourceUsage().maxRSS / 1024);
    emit({
      skipped:
        backend === 'wasm' && /Aborted\(|out of memory|Cannot enlarge memory|memory access out of bounds/i.test(msg)
          ? `wasm heap exhausted at ${rss} MB RSS (the heap is capped at 4 GiB): ${msg}`
          : `error: ${msg}`,
    });
    process.exit(0);
  });
