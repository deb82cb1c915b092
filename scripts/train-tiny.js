#!/usr/bin/env node
/**
 * `npm run train:tiny`: reproduces the bundled model packages/wuerstchen/models/wuerstchen-tiny from
 * nothing — shapes data → Stage A → Stage B (with its compressor) → Stage C → export (fp16) →
 * evaluation. Stage A and the pretraining of Stage B's compressor run alone, on all cores. Then Stage B's
 * decoder trains on the fixed compressor's maps, so Stage C (which trains on the same maps) runs beside it,
 * each process on one core (one BLAS thread each: two processes of two threads each on two cores are slower). Every
 * stage resumes where it stopped (run the command again after an interruption); a finished stage is skipped. Work goes to runs/tiny (or
 * --runs DIR); the model folder is replaced only at the end.
 *
 *   node scripts/train-tiny.js [--runs DIR] [--out DIR] [--backend NAME] [--skip-eval]
 */
'use strict';
const fs = require('fs');
const path = require('path');
const { spawn } = require('child_process');

const root = path.resolve(__dirname, '..');
const args = process.argv.slice(2);
const { flag } = require('./lib/flags');
const runs = path.resolve(flag('runs', path.join(root, 'runs', 'tiny')));
const out = path.resolve(flag('out', path.join(root, 'packages', 'wuerstchen', 'models', 'wuerstchen-tiny')));
const backend = flag('backend', process.env.WUERSTCHEN_BACKEND || 'auto');
const train = path.join(root, 'packages', 'train', 'bin', 'wuerstchen-train.js');
const data = path.join(runs, 'data');
const DATA_N = 20000;
const timingsFile = path.join(runs, 'timings.json');
const timings = fs.existsSync(timingsFile) ? JSON.parse(fs.readFileSync(timingsFile, 'utf8')) : {};

const ONE_THREAD = { ...process.env, OPENBLAS_NUM_THREADS: '1' };

/** Run a wuerstchen-train command; resolves when it exits 0, exits the script otherwise. */
function step(name, argv, env = ONE_THREAD) {
  process.stderr.write(`\n== train:tiny: ${name} ==\n`);
  const t0 = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [train, ...argv], {
      stdio: ['ignore', 'inherit', 'inherit'],
      cwd: root,
      env,
    });
    child.on('exit', (code, signal) => {
      if (code !== 0) {
        process.stderr.write(`train:tiny: ${name} failed (exit ${code ?? signal}); run again to resume\n`);
        process.exit(code || 1);
      }
      const sec = (Date.now() - t0) / 1000;
      timings[name] = (timings[name] ?? 0) + sec;
      fs.mkdirSync(runs, { recursive: true });
      fs.writeFileSync(timingsFile, JSON.stringify(timings, null, 2) + '\n');
      process.stderr.write(`train:tiny: ${name} done in ${(sec / 60).toFixed(1)} min\n`);
      resolve();
    });
  });
}

const state = (run) => {
  try {
    const latest = fs.readFileSync(path.join(run, 'latest'), 'utf8').trim();
    return JSON.parse(fs.readFileSync(path.resolve(run, latest, 'training_state.json'), 'utf8'));
  } catch {
    return null;
  }
};
const config = (name) => JSON.parse(fs.readFileSync(path.join(root, 'configs', name), 'utf8'));

/** Train stage `s` (resuming), optionally only up to `maxSteps`; skipped when already there. */
function stage(s, configName, extra, maxSteps, env = ONE_THREAD) {
  const run = path.join(runs, s);
  const st = state(run);
  // a run is done when it has reached the config's steps (a config whose steps grew resumes)
  const target = maxSteps ?? config(configName).phases.reduce((a, p) => a + p.steps, 0);
  if (st && st.step >= target) {
    process.stderr.write(`train:tiny: stage ${s} already at step ${st.step} in ${run}\n`);
    return Promise.resolve();
  }
  const argv = [
    `stage-${s}`,
    '--config',
    path.join(root, 'configs', configName),
    '--data',
    data,
    '--out',
    run,
    '--resume',
    '--backend',
    backend,
    '--progress',
    'plain',
    ...extra,
  ];
  return step(
    maxSteps === undefined ? `stage-${s}` : `stage-${s}-to-${maxSteps}`,
    maxSteps === undefined ? argv : [...argv, '--max-steps', String(maxSteps)],
    env,
  );
}

(async () => {
  const t0 = Date.now();
  const have = fs.existsSync(data) ? fs.readdirSync(data).filter((f) => f.endsWith('.png')).length : 0;
  if (have !== DATA_N)
    await step('data', ['make-shapes', '--out', data, '--n', String(DATA_N), '--seed', '1', '--side', '64']);
  await stage('a', 'tiny-a.json', [], undefined, process.env);
  const vqgan = ['--vqgan', path.join(runs, 'a')];
  // Stage B's phases that train the compressor, then its frozen-compressor phases beside Stage C
  const frozen = config('tiny-b.json').phases.findIndex((p) => p.freeze_effnet);
  if (frozen < 0) throw new Error('configs/tiny-b.json: expected a phase with "freeze_effnet": true');
  const compressorSteps = config('tiny-b.json')
    .phases.slice(0, frozen)
    .reduce((a, p) => a + p.steps, 0);
  await stage('b', 'tiny-b.json', vqgan, compressorSteps, process.env);
  await Promise.all([stage('b', 'tiny-b.json', vqgan), stage('c', 'tiny-c.json', ['--effnet', path.join(runs, 'b')])]);
  await step('export', [
    'export',
    '--prior',
    path.join(runs, 'c'),
    '--decoder',
    path.join(runs, 'b'),
    '--out',
    out,
    '--dtype',
    'fp16',
  ]);
  process.stderr.write(
    `\ntrain:tiny: ${out} written; this invocation took ${((Date.now() - t0) / 60000).toFixed(1)} min; wall time per step over all invocations (min): ${Object.entries(
      timings,
    )
      .map(([k, v]) => `${k} ${(v / 60).toFixed(1)}`)
      .join(', ')}\n`,
  );
  if (!args.includes('--skip-eval')) {
    const r = spawn(
      process.execPath,
      [path.join(root, 'scripts', 'eval-tiny.js'), '--model', out, '--backend', backend],
      { stdio: 'inherit', cwd: root },
    );
    r.on('exit', (code) => process.exit(code ?? 1));
  }
})();
