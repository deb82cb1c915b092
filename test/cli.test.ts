/**
 * The `wuerstchen generate` command: argument checking (exit code 2), PNG output of the requested
 * size written atomically, the same bytes for the same seed, progress on a TTY and without one, a
 * manifest naming the prompt of each image, and the installed bin (built here first).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { CliIO, main, outputPath, parseGenerateArgs } from '../packages/wuerstchen/src/cli';
import { decodePng } from '../packages/wuerstchen/src/pipelines/png';
import { TINY_MODEL_DIR } from '../packages/wuerstchen/src/tiny';
import { GOLDEN } from './helpers/shared';
import { useTempDir } from './helpers/tmp';

const HUB_PRIOR = path.join(GOLDEN, 'hub', 'wuerstchen-prior');
const HUB_DECODER = path.join(GOLDEN, 'hub', 'wuerstchen');
const ROOT = path.resolve(__dirname, '..');
const BIN = path.join(ROOT, 'packages', 'wuerstchen', 'bin', 'wuerstchen.js');
const DIST_CLI = path.join(ROOT, 'packages', 'wuerstchen', 'dist', 'cli.js');
const TSC = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

function capture(isTTY = false): CliIO & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s), isTTY },
    out: () => out,
    err: () => err,
  };
}

describe('wuerstchen generate: arguments', () => {
  const tmp = useTempDir();
  const base = () => [
    '--prior',
    HUB_PRIOR,
    '--decoder',
    HUB_DECODER,
    '--prompt',
    'a cat',
    '--out',
    path.join(tmp(), 'x.png'),
  ];

  test.each([
    [['--prior', HUB_PRIOR], /--prompt, --out are required/],
    [
      ['--prior', HUB_PRIOR, '--prompt', 'a', '--out', 'x.png'],
      /--decoder is missing \(give both folders, or --model, or neither for the bundled model\)/,
    ],
    [
      ['--prior', HUB_PRIOR, '--decoder', HUB_DECODER, '--model', HUB_PRIOR, '--prompt', 'a', '--out', 'x.png'],
      /--model replaces --prior and --decoder/,
    ],
    [['--width', 'abc'], /--width must be a positive integer, got "abc"/],
    [['--width', '0'], /--width must be a positive integer/],
    [['--prior-guidance', 'x'], /--prior-guidance must be a number >= 0/],
    [['--seed', '-1'], /--seed must be a non-negative integer/],
    [['--bogus', '1'], /unknown option --bogus/],
    [['stray'], /unexpected argument "stray"/],
    [['--backend', 'cuda'], /--backend must be one of auto, tensorflow, native, wasm, cpu/],
    [['--steps'], /unknown option --steps/],
    [['--images'], /--images needs a value/],
  ])('%j → exit 2', async (extra, message) => {
    const io = capture();
    const argv = extra[0] === '--prior' ? ['generate', ...extra] : ['generate', ...base(), ...extra];
    expect(await main(argv, io)).toBe(2);
    expect(io.err()).toMatch(message);
    expect(io.err()).toMatch(/wuerstchen generate --help/);
  });

  test('paths are checked before anything loads', async () => {
    let io = capture();
    const missing = path.join(tmp(), 'missing');
    expect(
      await main(
        [
          'generate',
          '--prior',
          missing,
          '--decoder',
          HUB_DECODER,
          '--prompt',
          'a cat',
          '--out',
          path.join(tmp(), 'x.png'),
        ],
        io,
      ),
    ).toBe(2);
    expect(io.err()).toMatch(/--prior: folder .*missing does not exist/);
    io = capture();
    expect(await main(['generate', ...base().slice(0, -1), path.join(tmp(), 'x.jpg')], io)).toBe(2);
    expect(io.err()).toMatch(/--out must name a \.png file/);
    io = capture();
    expect(await main(['generate', ...base().slice(0, -1), path.join(tmp(), 'no', 'x.png')], io)).toBe(2);
    expect(io.err()).toMatch(/--out: folder .* does not exist/);
  });

  test('an unsupported size is exit 2 with the valid sizes; a broken checkpoint is exit 1', async () => {
    let io = capture();
    expect(await main(['generate', ...base(), '--width', '500', '--backend', 'cpu'], io)).toBe(2);
    expect(io.err()).toMatch(/width 500 is not supported.*multiples of 128 \(nearest: 384 or 512\)/);
    io = capture();
    expect(
      await main(['generate', ...base().map((a) => (a === HUB_DECODER ? HUB_PRIOR : a)), '--backend', 'cpu'], io),
    ).toBe(1);
    expect(io.err()).toMatch(
      /error: .*model_index\.json: this folder holds a WuerstchenPriorPipeline; expected WuerstchenDecoderPipeline/,
    );
  });

  test('without folders the bundled tiny model is used, at its native size; --model takes a folder holding both', () => {
    const a = parseGenerateArgs([
      '--prompt',
      'a large red circle in the middle on a blue background',
      '--out',
      path.join(tmp(), 'x.png'),
    ]);
    expect(a).toMatchObject({
      bundled: true,
      width: 64,
      height: 64,
      prior: path.join(TINY_MODEL_DIR, 'wuerstchen-prior'),
      decoder: path.join(TINY_MODEL_DIR, 'wuerstchen'),
    });
    const m = parseGenerateArgs(['--model', TINY_MODEL_DIR, '--prompt', 'x', '--out', path.join(tmp(), 'x.png')]);
    expect(m).toMatchObject({ bundled: false, width: 512, prior: path.join(TINY_MODEL_DIR, 'wuerstchen-prior') });
    expect(() =>
      parseGenerateArgs(['--model', path.join(tmp(), 'none'), '--prompt', 'x', '--out', path.join(tmp(), 'x.png')]),
    ).toThrow(/--model: folder .*none does not exist/);
    expect(() => parseGenerateArgs(['--model', tmp(), '--prompt', 'x', '--out', path.join(tmp(), 'x.png')])).toThrow(
      /--model: .* holds no wuerstchen-prior\/ folder/,
    );
  });

  test('defaults and option forms', () => {
    const a = parseGenerateArgs([...base(), '--prompt', 'a dog', '--seed=3', '--keep-loaded']);
    expect(a).toMatchObject({
      prompts: ['a cat', 'a dog'],
      width: 512,
      height: 512,
      priorSteps: 60,
      decoderSteps: 12,
      priorGuidance: 4,
      decoderGuidance: 0,
      images: 1,
      seed: 3,
      keepLoaded: true,
    });
    expect(outputPath('a/b.png', 0, 1)).toBe('a/b.png');
    expect(outputPath('a/b.png', 1, 3)).toBe('a/b-2.png');
  });

  test('help', async () => {
    const io = capture();
    expect(await main(['generate', '--help'], io)).toBe(0);
    expect(io.out()).toMatch(/--negative-prompt/);
    expect(await main([], capture())).toBe(2);
    expect(await main(['paint'], capture())).toBe(2);
  });

  test('an unknown backend in $WUERSTCHEN_BACKEND is an argument problem (exit 2), found by its type', async () => {
    const saved = process.env.WUERSTCHEN_BACKEND;
    process.env.WUERSTCHEN_BACKEND = 'gpu';
    try {
      const io = capture();
      expect(await main(['generate', ...base()], io)).toBe(2);
      expect(io.err()).toMatch(
        /\nwuerstchen: unknown backend "gpu" \(from \$WUERSTCHEN_BACKEND\); expected one of auto, /,
      );
      expect(io.err()).not.toMatch(/error:/);
    } finally {
      if (saved === undefined) delete process.env.WUERSTCHEN_BACKEND;
      else process.env.WUERSTCHEN_BACKEND = saved;
    }
  });
});

describe('wuerstchen generate: images', () => {
  const tmp = useTempDir();
  const args = (out: string, overrides: Record<string, string> = {}) => {
    const opts: Record<string, string> = {
      '--prior': HUB_PRIOR,
      '--decoder': HUB_DECODER,
      '--prompt': 'a photo of a cat',
      '--width': '256',
      '--height': '128',
      '--prior-steps': '3',
      '--decoder-steps': '2',
      '--seed': '1',
      '--backend': 'cpu',
      '--out': out,
      ...overrides,
    };
    return ['generate', ...Object.entries(opts).flat()];
  };

  test('writes a PNG of the requested size; the same seed gives the same bytes; plain progress lines', async () => {
    const io = capture(false);
    const a = path.join(tmp(), 'a.png');
    const b = path.join(tmp(), 'b.png');
    const before = tf.memory().numTensors;
    expect(await main(args(a), io)).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
    expect(io.out()).toBe(`${a}\n`);
    const lines = io.err().split('\n');
    expect(lines.filter((l) => /^(prior|decoder|vqgan): \d+ steps? in/.test(l))).toHaveLength(3);
    expect(io.err()).not.toMatch(/\r/);
    expect(io.err()).toMatch(/peak memory \d+ MiB/);
    expect(await main(args(b), capture())).toBe(0);
    const png = fs.readFileSync(a);
    expect(Buffer.compare(png, fs.readFileSync(b))).toBe(0);
    const img = decodePng(png);
    expect([img.width, img.height]).toEqual([256, 128]);
    expect(fs.readdirSync(tmp()).sort()).toEqual(['a.png', 'b.png']); // no temporary files left
  });

  test("a progress bar on a TTY; several prompts get numbered files and a manifest naming each one's prompt", async () => {
    const io = capture(true);
    const out = path.join(tmp(), 'c.png');
    const argv = [...args(out, { '--prior-steps': '2', '--decoder-steps': '1' }), '--prompt', 'a dog'];
    expect(await main(argv, io)).toBe(0);
    const files = [path.join(tmp(), 'c-1.png'), path.join(tmp(), 'c-2.png')];
    expect(io.out()).toBe(`${files[0]}\n${files[1]}\n`);
    expect(io.err()).toMatch(/\r\x1b\[2Kprior +\[#+-*\] 1\/2 .*(it\/s|s\/it) +ETA \d+:\d\d/);
    expect(io.err()).toMatch(/decoder +\[#{24}\] 1\/1 .*\r\x1b\[2Kdecoder: 1 step in \d+\.\d\d s/);
    expect(fs.readdirSync(tmp()).sort()).toEqual(['c-1.png', 'c-2.png', 'c.json']);
    const manifest = JSON.parse(fs.readFileSync(path.join(tmp(), 'c.json'), 'utf8'));
    expect(io.err()).toContain(
      `wuerstchen: ${path.join(tmp(), 'c.json')} names the prompt, seed and settings of each image`,
    );
    expect(manifest).toEqual({
      command: 'generate',
      model: { prior: HUB_PRIOR, decoder: HUB_DECODER, loras: [] },
      settings: {
        width: 256,
        height: 128,
        prior_steps: 2,
        decoder_steps: 1,
        prior_guidance: 4,
        decoder_guidance: 0,
        images_per_prompt: 1,
      },
      images: [
        { file: 'c-1.png', prompt: 'a photo of a cat', seed: 1, batch_index: 0 },
        { file: 'c-2.png', prompt: 'a dog', seed: 1, batch_index: 1 },
      ],
    });
  });

  test('the installed bin runs (exit 0 with a PNG; exit 2 for bad arguments)', () => {
    // the bin runs dist/: build it (incrementally) so that it is this source's, or fail with the compiler's words
    const tsc = spawnSync(process.execPath, [TSC, '-b', 'packages/core', 'packages/wuerstchen'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    expect(`${tsc.stdout}${tsc.stderr}`).toBe('');
    expect(tsc.status).toBe(0);
    expect(fs.existsSync(DIST_CLI)).toBe(true);
    const out = path.join(tmp(), 'bin.png');
    const ok = spawnSync(process.execPath, [BIN, ...args(out, { '--prior-steps': '1', '--decoder-steps': '1' })], {
      encoding: 'utf8',
    });
    expect(ok.stderr).toMatch(/vqgan: 1 step/);
    expect(ok.status).toBe(0);
    expect(ok.stdout.trim()).toBe(out);
    expect(decodePng(fs.readFileSync(out)).width).toBe(256);
    const bad = spawnSync(process.execPath, [BIN, 'generate', '--width', '12x'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/--width must be a positive integer/);
  });
});
