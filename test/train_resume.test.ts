/**
 * `wuerstchen-train` killed with SIGKILL mid-run (once shortly after a checkpoint, once inside a
 * checkpoint write) and resumed with --resume ends with bit-identical weights, EMA, optimizer moments
 * and training state to an uninterrupted run; after every kill `latest` points at a readable
 * checkpoint. Data come from WebDataset shards, so the streamed position is resumed too.
 * The CLI runs from dist: the packages are built first (tsc -b, incremental).
 */
import { ChildProcess, execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { openSafetensors } from '@wuerstchen/core';
import { readLatest } from '@wuerstchen/train';
import { makeToyShards } from '@wuerstchen/train/internal';

const ROOT = path.resolve(__dirname, '..');
const BIN = path.join(ROOT, 'packages', 'train', 'bin', 'wuerstchen-train.js');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-resume-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

beforeAll(() => {
  execFileSync(
    process.execPath,
    [
      path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
      '-b',
      'packages/core',
      'packages/wuerstchen',
      'packages/train',
    ],
    { cwd: ROOT, stdio: 'pipe' },
  );
}, 280000);

function start(
  args: string[],
  env: Record<string, string> = {},
): { child: ChildProcess; done: Promise<number | null>; stderr: () => string } {
  let err = '';
  const child = spawn(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    env: { ...process.env, WUERSTCHEN_BACKEND: 'cpu', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, done, stderr: () => err };
}

function latestStep(out: string): number {
  const l = readLatest(out);
  return l ? Number(path.basename(l).slice(5)) : -1;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor(cond: () => boolean, what: string, limitMs = 200000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > limitMs) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** latest must always be a complete checkpoint. */
function checkReadable(out: string): void {
  const dir = readLatest(out)!;
  expect(dir).toBeTruthy();
  JSON.parse(fs.readFileSync(path.join(dir, 'training_state.json'), 'utf8'));
  for (const f of [
    'prior/diffusion_pytorch_model.safetensors',
    'prior_ema/diffusion_pytorch_model.safetensors',
    'optimizer.safetensors',
  ]) {
    const r = openSafetensors(path.join(dir, f));
    r.keys().forEach((k) => r.get(k));
    r.close();
  }
  JSON.parse(fs.readFileSync(path.join(dir, 'prior', 'config.json'), 'utf8'));
}

test('SIGKILL at arbitrary moments + --resume reproduces the uninterrupted run bit for bit', async () => {
  const shards = path.join(tmp, 'shards');
  makeToyShards(shards, 3, 6, { jpegEvery: 4 });
  const cfg = JSON.parse(fs.readFileSync(path.join(ROOT, 'configs', 'stage-c-tiny.json'), 'utf8')) as Record<
    string,
    unknown
  >;
  Object.assign(cfg, { checkpoint_every: 2, keep_checkpoints: 2, sample_every: 8 });
  const cfgFile = path.join(tmp, 'stage-c-resume.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg, null, 2));
  const common = (out: string) => [
    'stage-c',
    '--config',
    cfgFile,
    '--data',
    shards,
    '--out',
    out,
    '--progress',
    'plain',
  ];

  const refOut = path.join(tmp, 'ref');
  const killOut = path.join(tmp, 'killed');
  const ref = start(common(refOut));
  // first run: killed shortly after its first checkpoint
  let run = start(common(killOut));
  await waitFor(() => latestStep(killOut) >= 2, 'a first checkpoint');
  await sleep(350);
  run.child.kill('SIGKILL');
  await run.done;
  checkReadable(killOut);
  const firstKill = latestStep(killOut);
  // second run: resumed, killed while it is inside a checkpoint write (held there by a test hook)
  run = start([...common(killOut), '--resume'], { WUERSTCHEN_TRAIN_CHECKPOINT_HOLD_MS: '3000' });
  const ckpts = path.join(killOut, 'checkpoints');
  await waitFor(() => fs.readdirSync(ckpts).some((f) => f.startsWith('.tmp-')), 'a checkpoint write in progress');
  await sleep(100);
  run.child.kill('SIGKILL');
  await run.done;
  expect(fs.readdirSync(ckpts).some((f) => f.startsWith('.tmp-'))).toBe(true); // the half-written folder is left behind…
  expect(latestStep(killOut)).toBe(firstKill); // …and latest still points at the previous complete checkpoint
  checkReadable(killOut);
  expect(latestStep(killOut)).toBeLessThan(16);
  // third run: resumed to the end
  run = start([...common(killOut), '--resume']);
  const code = await run.done;
  expect({ code, err: code === 0 ? '' : run.stderr() }).toEqual({ code: 0, err: '' });
  expect(run.stderr()).toMatch(/resumed from .*step-0000/);
  expect(fs.readdirSync(ckpts).some((f) => f.startsWith('.tmp-'))).toBe(false); // cleaned up
  const refCode = await ref.done;
  expect({ code: refCode, err: refCode === 0 ? '' : ref.stderr() }).toEqual({ code: 0, err: '' });

  const a = readLatest(refOut)!;
  const b = readLatest(killOut)!;
  expect(path.basename(a)).toBe('step-00000016');
  expect(path.basename(b)).toBe('step-00000016');
  for (const f of [
    'prior/diffusion_pytorch_model.safetensors',
    'prior/config.json',
    'prior_ema/diffusion_pytorch_model.safetensors',
    'optimizer.safetensors',
    'training_state.json',
  ]) {
    expect({
      f,
      same: Buffer.compare(fs.readFileSync(path.join(a, f)), fs.readFileSync(path.join(b, f))) === 0,
    }).toEqual({ f, same: true });
  }
  // the metrics of the resumed run cover every step exactly once
  const steps = fs
    .readFileSync(path.join(killOut, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { step: number }).step);
  expect(steps).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
}, 290000);
