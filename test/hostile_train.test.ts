/**
 * Hostile inputs and faults on the training side (issue 10): checkpoints are never lost (manifests,
 * fallback to the newest intact checkpoint, refusal to start over existing ones, `latest` confined
 * to the run folder, strict training_state.json), SIGINT/SIGTERM save and exit 130/143, `--out` is
 * checked up front, and data cannot blow up memory or the run (pixel limit before decoding,
 * validated tar members, capped brace expansion, non-object JSONL lines, bad shards skipped unless
 * strict). Every fixture is small and generated here; a seeded fuzz mutates a valid shard 500 times.
 */
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import * as zlib from 'zlib';
import * as tf from '@tensorflow/tfjs';
import { Generator } from 'wuerstchen';
import {
  CheckpointError,
  ConfigError,
  DatasetError,
  ImageTextDataset,
  StageATrainer,
  TrainError,
  TrainOptions,
  parseConfig,
  readLatest,
} from '@wuerstchen/train';
import {
  ImageTooLargeError,
  TarError,
  TarReader,
  decodeImage,
  expandBraces,
  imageDimensions,
  makeToyDataset,
  makeToyShards,
  parseTrainingState,
  readLatestPointer,
  writeCheckpoint,
  writeFileSynced,
} from '@wuerstchen/train/internal';
import { main } from '../packages/train/src/cli';
import { useTempDir } from './helpers/tmp';

const CONFIGS = path.resolve(__dirname, '../configs');
const quiet = () => undefined;

beforeAll(async () => {
  await tf.setBackend('cpu');
});

// ---- helpers ----------------------------------------------------------------------------------

/** relative file → SHA-256 of every file under `dir`. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const f of (fs.readdirSync(dir, { recursive: true }) as string[]).sort()) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) out[f] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

const ckpt = (out: string, step: number) => path.resolve(out, 'checkpoints', `step-${String(step).padStart(8, '0')}`);

function metricSteps(out: string): number[] {
  return fs
    .readFileSync(path.join(out, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => (JSON.parse(l) as { step: number }).step);
}

/** The tiny Stage A recipe on 16 px crops, batches of 2, no previews; `extra` overrides its keys. */
function tinyConfigJson(extra: Record<string, unknown> = {}): Record<string, unknown> {
  const raw = JSON.parse(fs.readFileSync(path.join(CONFIGS, 'stage-a-tiny.json'), 'utf8')) as {
    phases: Record<string, unknown>[];
  };
  return { ...raw, phases: [{ ...raw.phases[0], batch_size: 2, image_size: 16 }], sample_every: 0, ...extra };
}

/** The tiny recipe with a checkpoint every 2 updates. */
const tinyConfig = () =>
  parseConfig(
    tinyConfigJson({ checkpoint_every: 2, keep_checkpoints: 3 }),
    path.join(CONFIGS, 'stage-a-tiny.json'),
    'a',
  );

/** Train (or resume) the tiny Stage A in-process; returns the log lines. */
async function train(data: string, out: string, opts: Partial<TrainOptions> = {}): Promise<string[]> {
  const logs: string[] = [];
  const t = new StageATrainer({ config: tinyConfig(), data, out, progress: 'none', log: (l) => logs.push(l), ...opts });
  try {
    await t.run();
  } finally {
    t.dispose();
  }
  return logs;
}

/** Run the CLI in-process with stderr captured. */
async function cli(argv: string[], during?: () => void): Promise<{ code: number; err: string }> {
  let err = '';
  const spy = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    err += s.toString();
    return true;
  });
  const poll = during && setInterval(during, 5);
  try {
    return { code: await main(argv), err };
  } finally {
    if (poll) clearInterval(poll);
    spy.mockRestore();
  }
}

/** No line of `err` is part of a stack trace. */
const noStack = (err: string) => expect(err.split('\n').filter((l) => /^\s+at /.test(l))).toEqual([]);

function pngHeaderOnly(width: number, height: number): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  // a small compressed stream of zero rows: what a decompression bomb looks like
  const idat = zlib.deflateSync(Buffer.alloc(1 << 20));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', idat),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function crc32(buf: Buffer): number {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1;
  }
  return ~c >>> 0;
}

function jpegHeaderOnly(width: number, height: number): Buffer {
  const app0 = Buffer.from([
    0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00,
  ]);
  const sof = Buffer.from([
    0xff,
    0xc0,
    0x00,
    0x11,
    0x08,
    height >> 8,
    height & 255,
    width >> 8,
    width & 255,
    0x03,
    1,
    0x11,
    0,
    2,
    0x11,
    1,
    3,
    0x11,
    1,
  ]);
  return Buffer.concat([Buffer.from([0xff, 0xd8]), app0, sof, Buffer.from([0xff, 0xd9])]);
}

/** Header offsets of a tar's member entries. */
const headerOffsets = (file: string): number[] => {
  const r = new TarReader(file);
  try {
    return [...r.entries(true)].map((e) => e.offset - 512);
  } finally {
    r.close();
  }
};

/** Rewrite a header's checksum after editing it, so the edit reaches the field checks behind it. */
function fixChecksum(buf: Buffer, at: number): void {
  buf.fill(0x20, at + 148, at + 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += buf[at + i];
  buf.write(sum.toString(8).padStart(6, '0') + '\0 ', at + 148, 'latin1');
}

// ---- checkpoints ------------------------------------------------------------------------------

describe('checkpoints are never lost', () => {
  const tmp = useTempDir('hostile-ckpt-');

  test('corrupt latest, then a corrupt newest checkpoint: resume takes the newest intact one, leaves it unchanged and continues from it', async () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 8, { size: [24, 24] });
    const out = path.join(tmp(), 'run');
    await train(data, out, { maxSteps: 6 });
    expect(fs.readdirSync(path.join(out, 'checkpoints')).sort()).toEqual([
      'step-00000002',
      'step-00000004',
      'step-00000006',
    ]);
    expect(fs.existsSync(path.join(ckpt(out, 6), 'manifest.json'))).toBe(true);
    const six = snapshot(ckpt(out, 6));

    // 1. `latest` points out of the run folder: not followed; the newest intact checkpoint is used and named
    fs.writeFileSync(path.join(out, 'latest'), '../../../../etc\n');
    let logs = await train(data, out, { resume: true, maxSteps: 8 });
    expect(logs.join('\n')).toMatch(
      /latest holds "\.\.\/\.\.\/\.\.\/\.\.\/etc".*using the newest intact checkpoint, step-00000006/,
    );
    expect(logs.join('\n')).toMatch(/resumed from .*step-00000006 at step 6/);
    expect(snapshot(ckpt(out, 6))).toEqual(six);
    expect(metricSteps(out)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(readLatest(out)).toBe(ckpt(out, 8));
    const eight = snapshot(ckpt(out, 8));

    // 2. the newest checkpoint is truncated: passed over with the reason, resumed from the one before
    const opt8 = path.join(ckpt(out, 8), 'optimizer.safetensors');
    fs.truncateSync(opt8, Math.floor(fs.statSync(opt8).size / 2));
    logs = await train(data, out, { resume: true, maxSteps: 8 });
    expect(logs.join('\n')).toMatch(
      /checkpoint step-00000008 cannot be resumed: optimizer\.safetensors is \d+ bytes, the manifest recorded \d+/,
    );
    expect(logs.join('\n')).toMatch(/latest names step-00000008; using the newest intact checkpoint, step-00000006/);
    expect(snapshot(ckpt(out, 6))).toEqual(six);
    // training went on from step 6 exactly as before: the re-written step 8 is bit-identical
    expect(snapshot(ckpt(out, 8))).toEqual(eight);
    expect(metricSteps(out)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);

    // 3. every checkpoint corrupt: a clear refusal, nothing touched
    for (const s of [4, 6, 8])
      fs.appendFileSync(path.join(ckpt(out, s), 'vqgan', 'diffusion_pytorch_model.safetensors'), 'x');
    const before = snapshot(out);
    await expect(train(data, out, { resume: true, maxSteps: 12 })).rejects.toThrow(
      /none of its 3 checkpoint\(s\) can be resumed \(step-00000008: vqgan\/diffusion_pytorch_model\.safetensors is \d+ bytes.*not starting from scratch/,
    );
    expect(snapshot(out)).toEqual(before);
    await expect(train(data, out, { resume: true })).rejects.toBeInstanceOf(CheckpointError);
  });

  test('without --resume any checkpoint refuses the folder, with or without latest', async () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 2, { size: [24, 24] });
    const out = path.join(tmp(), 'run');
    writeCheckpoint(out, 2, (d) => writeFileSynced(path.join(d, 'training_state.json'), '{}'));
    writeCheckpoint(out, 4, (d) => writeFileSynced(path.join(d, 'training_state.json'), '{}'));
    await expect(train(data, out)).rejects.toThrow(
      /already holds a training run \(checkpoints\/step-00000004 and 1 older\); pass --resume/,
    );
    fs.rmSync(path.join(out, 'latest'));
    const before = snapshot(out);
    await expect(train(data, out)).rejects.toThrow(TrainError);
    expect(snapshot(out)).toEqual(before);
  });

  test('older checkpoints without a manifest still resume; a bad step in training_state.json is passed over', async () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 4, { size: [24, 24] });
    const out = path.join(tmp(), 'run');
    await train(data, out, { maxSteps: 4 });
    // as written by the previous version: no manifest
    for (const s of [2, 4]) fs.rmSync(path.join(ckpt(out, s), 'manifest.json'));
    const statePath = path.join(ckpt(out, 4), 'training_state.json');
    fs.writeFileSync(statePath, fs.readFileSync(statePath, 'utf8').replace('"step": 4,', '"step": "abc",'));
    const two = snapshot(ckpt(out, 2));
    const logs = await train(data, out, { resume: true, maxSteps: 4 });
    const text = logs.join('\n');
    expect(text).toMatch(
      /checkpoint step-00000004 cannot be resumed: training_state\.json: "step" must be a non-negative integer, got "abc"/,
    );
    expect(text).toMatch(/checkpoint step-00000002 has no manifest\.json \(written by an older version\)/);
    expect(text).toMatch(/resumed from .*step-00000002 at step 2/);
    expect(snapshot(ckpt(out, 2))).toEqual(two);
    expect(metricSteps(out)).toEqual([1, 2, 3, 4]);
    expect(fs.existsSync(path.join(ckpt(out, 4), 'manifest.json'))).toBe(true); // re-written by this version
  });

  test('latest must name a checkpoint inside the run folder', () => {
    const out = tmp();
    fs.mkdirSync(path.join(out, 'checkpoints', 'step-00000002'), { recursive: true });
    fs.mkdirSync(path.join(tmp(), 'etc'));
    const cases: [string, RegExp][] = [
      ['', /is empty/],
      ['../../../../etc', /not "checkpoints\/step-<n>"/],
      ['/etc', /not "checkpoints\/step-<n>"/],
      ['checkpoints/../etc', /not "checkpoints\/step-<n>"/],
      ['checkpoints/step-00000009', /not a folder/],
      ['\0\0garbage\u0001', /not "checkpoints\/step-<n>"/],
    ];
    for (const [text, reason] of cases) {
      fs.writeFileSync(path.join(out, 'latest'), text);
      const p = readLatestPointer(out);
      expect({ text, kind: p.kind }).toEqual({ text, kind: 'bad' });
      expect(p.kind === 'bad' && p.reason).toMatch(reason);
      expect(readLatest(out)).toBeNull();
    }
    fs.writeFileSync(path.join(out, 'latest'), 'checkpoints/step-00000002\n');
    expect(readLatest(out)).toBe(path.join(out, 'checkpoints', 'step-00000002'));
  });

  test('training_state.json fields are checked: types, ranges, the step its folder is named for', () => {
    const good = {
      version: 2,
      stage: 'a',
      config_name: 'x',
      step: 4,
      total_steps: 12,
      phase: { index: 0, name: 'p', step_in_phase: 4 },
      optimizer_steps: { vqgan: 4 },
      skipped: 0,
      ema_loss: 0.5,
      rng: { algorithm: 'xoshiro128**', s: [1, 2, 3, 4] },
      data: {
        position: { epoch: 0, index: 1, emitted: 0, consumed: 16, usableInEpoch: 1 },
        warnings: { unreadable: 0, missingCaption: 0 },
        warned: [],
      },
      finished: false,
    };
    expect(parseTrainingState(JSON.stringify(good), 'a', 4).step).toBe(4);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ step: 'abc' }, /"step" must be a non-negative integer, got "abc"/],
      [{ step: 1e300 }, /"step" must be a non-negative integer/],
      [{ step: -1 }, /"step" must be a non-negative integer/],
      [{ step: 4.5 }, /"step" must be a non-negative integer/],
      [{ step: 2 }, /"step" must be 4 \(the step its folder is named for\), got 2/],
      [{ stage: 'c' }, /"stage" must be "a"/],
      [{ version: 1 }, /"version" must be 2/],
      [{ rng: { algorithm: 'xoshiro128**', s: [0, 0, 0, 0] } }, /"rng" must be/],
      [
        { data: { ...good.data, position: { ...good.data.position, consumed: 'many' } } },
        /"data\.position\.consumed" must be a non-negative integer/,
      ],
      [{ data: { ...good.data, warned: [1] } }, /"data\.warned" must be a list of strings/],
      [{ optimizer_steps: { vqgan: NaN } }, /"optimizer_steps" must be/],
    ];
    for (const [patch, message] of bad)
      expect(() => parseTrainingState(JSON.stringify({ ...good, ...patch }), 'a', 4)).toThrow(message);
    expect(() => parseTrainingState('null', 'a', 4)).toThrow(/must be an object/);
    expect(() => parseTrainingState('{"step": 4', 'a', 4)).toThrow(/not valid JSON/);
  });
});

// ---- the CLI: --out, signals, one-line errors -------------------------------------------------

describe('wuerstchen-train: --out, signals and errors', () => {
  const tmp = useTempDir('hostile-cli-');
  const args = (cfg: string, data: string, out: string) => [
    'stage-a',
    '--config',
    cfg,
    '--data',
    data,
    '--out',
    out,
    '--backend',
    'cpu',
    '--progress',
    'none',
  ];

  test('--out is checked before anything is built: exit 2 with a clear message', async () => {
    const file = path.join(tmp(), 'file');
    fs.writeFileSync(file, 'x');
    const cases: [string, RegExp][] = [
      [file, /--out .*file exists and is not a folder/],
      [path.join(tmp(), 'missing', 'run'), /--out .*missing\/run: its parent folder .*missing does not exist/],
      [path.join(file, 'run'), /its parent .*file is not a folder/],
      // sysfs refuses new files even to root
      ['/sys/kernel', /--out \/sys\/kernel: \/sys\/kernel is not writable/],
      ['/sys/wuerstchen-run', /--out \/sys\/wuerstchen-run: \/sys is not writable/],
    ];
    for (const [out, message] of cases) {
      const r = await cli(args('no-such-config.json', 'no-such-data', out));
      expect({ out, code: r.code }).toEqual({ out, code: 2 });
      expect(r.err).toMatch(message);
      noStack(r.err);
    }
  });

  test('flags: a value that is a flag, a non-decimal --max-steps, a value given to --strict-data', async () => {
    for (const [argv, message] of [
      [['stage-a', '--config', '--help', '--data', 'd', '--out', 'o'], /--config needs a value/],
      [
        ['stage-a', '--config', 'c', '--data', 'd', '--out', 'o', '--max-steps', '0x10'],
        /--max-steps must be a positive integer, got "0x10"/,
      ],
      [['stage-a', '--config', 'c', '--data', 'd', '--out', 'o', '--strict-data=yes'], /--strict-data takes no value/],
    ] as [string[], RegExp][]) {
      const r = await cli(argv);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
    }
  });

  test('SIGINT saves a checkpoint and exits 130, SIGTERM exits 143; no temporary files are left', async () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 4, { size: [24, 24] });
    const cfgFile = path.join(tmp(), 'a.json');
    fs.writeFileSync(cfgFile, JSON.stringify(tinyConfigJson({ checkpoint_every: 100 })));
    const out = path.join(tmp(), 'run');
    // the handlers are the CLI's alone while it runs (jest's own, if any, come back afterwards)
    const saved = (['SIGINT', 'SIGTERM'] as const).map((s) => [s, process.listeners(s)] as const);
    saved.forEach(([s]) => process.removeAllListeners(s));
    try {
      for (const [sig, code, resume] of [
        ['SIGINT', 130, []],
        ['SIGTERM', 143, ['--resume']],
      ] as const) {
        let sent = false;
        const r = await cli([...args(cfgFile, data, out), ...resume], () => {
          // deliver the signal once the run has made progress (Node dispatches signals as process events)
          if (
            !sent &&
            fs.existsSync(path.join(out, 'metrics.jsonl')) &&
            metricSteps(out).length >= (sig === 'SIGINT' ? 1 : 3)
          ) {
            sent = true;
            process.emit(sig, sig);
          }
        });
        expect({ sig, code: r.code }).toEqual({ sig, code });
        expect(r.err).toMatch(new RegExp(`${sig}: finishing the current step and writing a checkpoint`));
        const steps = metricSteps(out);
        expect(steps.length).toBeLessThan(12);
        expect(readLatest(out)).toBe(ckpt(out, steps[steps.length - 1]));
        expect(fs.readdirSync(path.join(out, 'checkpoints')).filter((f) => f.startsWith('.'))).toEqual([]);
        expect(fs.readdirSync(out).filter((f) => f.includes('.tmp'))).toEqual([]);
      }
    } finally {
      saved.forEach(([s, ls]) => ls.forEach((l) => process.on(s, l as () => void)));
    }
  });

  test('failures are one line naming the file: a corrupt run, a bad config, a bad dataset', async () => {
    const data = path.join(tmp(), 'data');
    makeToyDataset(data, 4, { size: [24, 24] });
    const cfgFile = path.join(tmp(), 'a.json');
    fs.writeFileSync(
      cfgFile,
      JSON.stringify({
        ...JSON.parse(fs.readFileSync(path.join(CONFIGS, 'stage-a-tiny.json'), 'utf8')),
        max_image_pixels: 'lots',
      }),
    );
    let r = await cli(args(cfgFile, data, path.join(tmp(), 'r1')));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/a\.json: "max_image_pixels" must be a positive integer, got "lots"/);
    noStack(r.err);
    fs.writeFileSync(cfgFile, fs.readFileSync(path.join(CONFIGS, 'stage-a-tiny.json')));
    const empty = path.join(tmp(), 'empty');
    fs.mkdirSync(empty);
    r = await cli(args(cfgFile, empty, path.join(tmp(), 'r2')));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/empty has nothing usable/);
    noStack(r.err);
    const run = path.join(tmp(), 'r3');
    fs.mkdirSync(path.join(run, 'checkpoints', 'step-00000004'), { recursive: true });
    fs.writeFileSync(path.join(run, 'latest'), 'checkpoints/step-00000004\n');
    r = await cli([...args(cfgFile, data, run), '--resume']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /none of its 1 checkpoint\(s\) can be resumed \(step-00000004: training_state\.json is missing\)/,
    );
    noStack(r.err);
  });
});

// ---- data -------------------------------------------------------------------------------------

describe('data: bounded memory, skipped with counted warnings unless strict', () => {
  const tmp = useTempDir('hostile-data-');

  test('an image declaring too many pixels is skipped before decoding (PNG IHDR, JPEG SOF)', () => {
    const png = pngHeaderOnly(30000, 30000);
    const jpg = jpegHeaderOnly(30000, 30000);
    expect(imageDimensions(png)).toEqual({ format: 'png', width: 30000, height: 30000 });
    expect(imageDimensions(jpg)).toEqual({ format: 'jpeg', width: 30000, height: 30000 });
    expect(() => decodeImage(png)).toThrow(ImageTooLargeError);
    expect(() => decodeImage(jpg)).toThrow(
      /30000×30000 = 900000000 pixels, over the limit of 67108864 \(max_image_pixels\)/,
    );
    const dir = path.join(tmp(), 'folder');
    makeToyDataset(dir, 3, { size: [32, 32] });
    fs.writeFileSync(path.join(dir, 'bomb.png'), png);
    fs.writeFileSync(path.join(dir, 'bomb.txt'), 'a bomb');
    fs.writeFileSync(path.join(dir, 'tall.jpg'), jpg);
    fs.writeFileSync(path.join(dir, 'tall.txt'), 'a tall one');
    const logs: string[] = [];
    const ds = new ImageTextDataset(dir, { seed: 0, log: (l) => logs.push(l) });
    const ids = Array.from({ length: 10 }, () => ds.next().id);
    expect(ids.some((id) => /bomb|tall/.test(id))).toBe(false);
    expect(ds.warnings.oversized).toBe(2);
    expect(logs.join('\n')).toMatch(/skipping .*bomb\.png: image too large/);
    // the limit is configurable: 32×32 images are over 1000 pixels
    const small = new ImageTextDataset(dir, { seed: 0, log: quiet, maxImagePixels: 1000 });
    expect(() => small.next()).toThrow(/nothing usable: a whole pass skipped every sample \(5 oversized image\(s\)\)/);
    const strict = new ImageTextDataset(dir, { seed: 0, strict: true });
    expect(() => Array.from({ length: 5 }, () => strict.next())).toThrow(
      /(bomb\.png|tall\.jpg): image too large .*strict data mode/,
    );
    expect(() =>
      parseConfig({ stage: 'a', phases: [{ steps: 1, batch_size: 1, image_size: 8 }], max_image_pixels: 0 }, 'x.json'),
    ).toThrow(ConfigError);
  });

  test('tar members: garbage, truncated, absurd sizes and bad names are named errors; such a shard is skipped', () => {
    const dir = path.join(tmp(), 'shards');
    const [good, victim] = makeToyShards(dir, 2, 3, { size: [24, 24] });
    const valid = fs.readFileSync(victim);
    const [h0, h1, h2] = headerOffsets(victim);
    const edits: [string, (b: Buffer) => Buffer, RegExp][] = [
      ['garbage', () => Buffer.alloc(4096, 0x41), /bad header checksum at byte 0/],
      [
        'truncated',
        (b) => b.subarray(0, h2 + 520),
        /entry at byte \d+ declares \d+ bytes, past the end of the file \(truncated shard\)/,
      ],
      [
        'absurd size',
        (b) => (b.write('77777777777\0', h1 + 124, 'latin1'), fixChecksum(b, h1), b),
        /declares 8589934591 bytes, past the end of the file/,
      ],
      [
        'size not a number',
        (b) => (b.write('12x45\0', h0 + 124, 'latin1'), fixChecksum(b, h0), b),
        /the size field is not a number/,
      ],
      [
        'negative base-256 size',
        (b) => (b.fill(0xff, h0 + 124, h0 + 136), fixChecksum(b, h0), b),
        /the size field is not a number/,
      ],
      [
        'control characters in a name',
        (b) => (b.write('a\u0007b.png\0', h0, 'latin1'), fixChecksum(b, h0), b),
        /invalid name "a\\u0007b\.png"/,
      ],
      [
        'a partial trailing block',
        (b) => Buffer.concat([b.subarray(0, b.length - 1024), Buffer.from('xyz')]),
        /truncated header/,
      ],
    ];
    for (const [what, edit, message] of edits) {
      fs.writeFileSync(victim, edit(Buffer.from(valid)));
      const r = new TarReader(victim);
      let err: unknown;
      try {
        for (const e of r.entries()) r.read(e);
      } catch (e) {
        err = e;
      } finally {
        r.close();
      }
      expect({ what, error: err instanceof TarError }).toEqual({ what, error: true });
      expect((err as Error).message).toMatch(message);
      // in a dataset: the good shard's samples still come, the bad shard is one counted warning
      const logs: string[] = [];
      const ds = new ImageTextDataset(dir, { seed: 1, shuffleBuffer: 2, log: (l) => logs.push(l) });
      const ids = Array.from({ length: 8 }, () => ds.next().id);
      expect(ids.filter((id) => id.startsWith(good)).length).toBeGreaterThan(0);
      expect({ what, badShards: ds.warnings.badShards }).toEqual({ what, badShards: 1 });
      expect(logs.join('\n')).toMatch(/skipping .*shard-001\.tar: not a valid tar shard/);
      expect(() => new ImageTextDataset(victim, { seed: 1, strict: true }).next()).toThrow(
        /shard-001\.tar: .*strict data mode/,
      );
    }
  });

  test('a FIFO as a shard or an image does not hang the reader', () => {
    const dir = path.join(tmp(), 'mixed');
    const [good] = makeToyShards(dir, 1, 2, { size: [24, 24] });
    const fifo = path.join(dir, 'fifo.tar');
    expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
    expect(() => new TarReader(fifo)).toThrow(/fifo\.tar: is not a regular file/);
    const ds = new ImageTextDataset(`${good},${fifo}`, { seed: 0, log: quiet });
    for (let i = 0; i < 6; i++) expect(ds.next().id.startsWith(good)).toBe(true);
    expect(ds.warnings.badShards).toBe(1);
    const folder = path.join(tmp(), 'folder');
    makeToyDataset(folder, 2, { size: [24, 24] });
    expect(spawnSync('mkfifo', [path.join(folder, 'pipe.png')]).status).toBe(0);
    fs.writeFileSync(path.join(folder, 'pipe.txt'), 'a pipe');
    const fds = new ImageTextDataset(folder, { seed: 0, log: quiet });
    for (let i = 0; i < 6; i++) fds.next();
    expect(fds.warnings.unreadable).toBe(1);
  });

  test('brace expansion is capped', () => {
    expect(expandBraces('x-{0..2}.tar')).toEqual(['x-0.tar', 'x-1.tar', 'x-2.tar']);
    expect(expandBraces('{a,b{1,2}}')).toEqual(['a', 'b1', 'a', 'b2']);
    expect(() => expandBraces('x-{0..99999999}.tar')).toThrow(
      /x-\{0\.\.99999999\}\.tar expands to more than 100000 names/,
    );
    expect(() => expandBraces('{0..99}{0..99}{0..99}')).toThrow(DatasetError);
    expect(() => expandBraces('{0..99999999999999999999}')).toThrow(DatasetError);
    expect(() => new ImageTextDataset(path.join(tmp(), 's-{0..99999999}.tar'), { seed: 0 })).toThrow(
      /expands to more than 100000 names/,
    );
    expect(() => new ImageTextDataset(path.join(tmp(), 's-{9..0}.tar'), { seed: 0 })).toThrow(/names no shards/);
  });

  test('JSONL lines that are not objects are skipped with a counted warning', () => {
    const dir = tmp();
    makeToyDataset(path.join(dir, 'img'), 2, { size: [24, 24] });
    const file = path.join(dir, 'm.jsonl');
    const lines = [
      'null',
      '[]',
      '3',
      '"text"',
      'true',
      '{"file_name": 7, "text": "x"}',
      JSON.stringify({ file_name: 'img/img0000.png', text: 'ok' }),
      JSON.stringify({ file_name: 'img/img0001.png', text: 'ok too' }),
    ];
    fs.writeFileSync(file, lines.join('\n'));
    const logs: string[] = [];
    const ds = new ImageTextDataset(file, { seed: 0, log: (l) => logs.push(l) });
    expect(ds.warnings.malformed).toBe(6);
    expect(logs.join('\n')).toMatch(/m\.jsonl:1: not a JSON object \(null\), skipped/);
    expect(new Set(Array.from({ length: 4 }, () => ds.next().caption))).toEqual(new Set(['ok', 'ok too']));
    expect(() => new ImageTextDataset(file, { seed: 0, strict: true })).toThrow(
      /m\.jsonl:1: not a JSON object \(null\) \(strict data mode/,
    );
  });

  test('fuzz: 500 seeded mutations of a valid shard give samples, counted skips or a named error; never a crash or a hang', () => {
    const dir = tmp();
    const [shard] = makeToyShards(path.join(dir, 'src'), 1, 4, { size: [16, 16], jpegEvery: 2 });
    const valid = fs.readFileSync(shard);
    const headers = headerOffsets(shard);
    const g = new Generator(20240610);
    const file = path.join(dir, 'fuzz.tar');
    const outcome = { clean: 0, skipped: 0, error: 0 };
    const mutate = (b: Buffer): Buffer => {
      const at = () => g.int(b.length);
      const h = headers[g.int(headers.length)];
      switch (g.int(8)) {
        case 0: // flip a few bytes anywhere
          for (let k = 1 + g.int(4); k > 0; k--) b[at()] ^= 1 + g.int(255);
          return b;
        case 1: // truncate
          return b.subarray(0, at());
        case 2: // a random numeric field of a header (mode .. checksum), checksum fixed or not
          b.write(String(g.int(1e9)).padStart(11, String(g.int(10))), h + 100 + 12 * g.int(4), 'latin1');
          if (g.int(2)) fixChecksum(b, h);
          return b;
        case 3: // an absurd or base-256 size with a valid checksum
          if (g.int(2)) b.write('7'.repeat(11), h + 124, 'latin1');
          else for (let i = 124; i < 136; i++) b[h + i] = g.int(256) | (i === 124 ? 0x80 : 0);
          fixChecksum(b, h);
          return b;
        case 4: // a garbage name or type with a valid checksum
          for (let i = 0; i < 1 + g.int(100); i++) b[h + g.int(100)] = g.int(256);
          if (g.int(2)) b[h + 156] = 'Lx5g2'.charCodeAt(g.int(5));
          fixChecksum(b, h);
          return b;
        case 5: // insert random bytes
          return Buffer.concat([
            b.subarray(0, at()),
            Buffer.from(Array.from({ length: 1 + g.int(600) }, () => g.int(256))),
            b.subarray(at()),
          ]);
        case 6: // zero or duplicate a block
          if (g.int(2)) return Buffer.concat([b.subarray(0, h), Buffer.alloc(512), b.subarray(h + 512)]);
          return Buffer.concat([b.subarray(0, h + 512), b.subarray(h, h + 512), b.subarray(h + 512)]);
        default: // overwrite a random span of image data
          b.fill(g.int(256), at(), at() + g.int(64));
          return b;
      }
    };
    for (let i = 0; i < 500; i++) {
      fs.writeFileSync(file, mutate(Buffer.from(valid)));
      const r = new TarReader(file);
      try {
        for (const e of r.entries(true)) if (e.size < 1 << 20) r.read(e);
      } catch (e) {
        if (!(e instanceof TarError)) throw new Error(`mutation ${i}: the reader crashed: ${(e as Error).stack}`);
      } finally {
        r.close();
      }
      const ds = new ImageTextDataset(file, { seed: i, shuffleBuffer: 3, log: quiet });
      try {
        for (let k = 0; k < 6; k++) ds.next();
        if (Object.values(ds.warnings).some((n) => n > 0)) outcome.skipped++;
        else outcome.clean++;
      } catch (e) {
        if (!(e instanceof DatasetError) || !e.message.includes(file))
          throw new Error(`mutation ${i}: not a named error: ${(e as Error).stack}`);
        outcome.error++;
      } finally {
        ds.close();
      }
    }
    expect(outcome.clean + outcome.skipped + outcome.error).toBe(500);
    expect(outcome.skipped).toBeGreaterThan(50);
    expect(outcome.error).toBeGreaterThan(50);
  });
});
