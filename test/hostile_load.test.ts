/**
 * Hostile inputs on the loading and inference side (issue 10): paths named inside index files that lead out of
 * the model folder, FIFOs and foreign files given as weights, safetensors files with gaps, trailing bytes or
 * duplicate keys, non-finite weights, absurd or inconsistent configs, malformed command lines, unwritable outputs,
 * interruption, and NaN images. Each must be a clean, named error. Ends with a seeded fuzz of the safetensors
 * reader. Fixtures are small copies of the miniature hub in shared/golden, or files written here.
 */
import { execFileSync } from 'child_process';
import { EventEmitter } from 'events';
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {
  HostTensor,
  Module,
  NonFiniteWeightError,
  SafetensorsError,
  StateDictError,
  loadSafetensors,
  openCheckpoint,
  openSafetensors,
  writeSafetensors,
} from '@wuerstchen/core';
import { CliIO, exitOnInterrupt, main, parseGenerateArgs } from '../packages/wuerstchen/src/cli';
import {
  CLIPTextModel,
  ConfigError,
  LoaderError,
  NonFiniteImageError,
  PaellaVQModel,
  WuerstchenCombinedPipeline,
  WuerstchenDiffNeXt,
  WuerstchenPrior,
  WuerstchenPriorPipeline,
  loadModel,
  parseCLIPTextConfig,
  parseDiffNeXtConfig,
  parsePaellaVQConfig,
  parsePriorConfig,
  prepareModel,
  tensorToPng,
} from 'wuerstchen';
import {
  CLIP_TEXT_BIGG,
  CLIP_TEXT_H,
  CLIP_TEXT_SCHEMA,
  DIFFNEXT_SCHEMA,
  PAELLA_VQ_SCHEMA,
  PRIOR_SCHEMA,
  registerTempFile,
} from 'wuerstchen/internal';
import { GOLDEN } from './helpers/shared';
import { useTempDir } from './helpers/tmp';

const HUB_PRIOR = path.join(GOLDEN, 'hub', 'wuerstchen-prior');
const HUB_DECODER = path.join(GOLDEN, 'hub', 'wuerstchen');
const CONFIGS = path.resolve(__dirname, '..', 'configs');

const tmp = useTempDir('wuerstchen-hostile-');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** Copies a hub folder so a test can break it (the shared folder is read-only; the copies must be writable). */
function copyTree(src: string, dst: string): string {
  fs.cpSync(src, dst, { recursive: true });
  const chmod = (p: string): void => {
    const dir = fs.statSync(p).isDirectory();
    fs.chmodSync(p, dir ? 0o755 : 0o644);
    if (dir) for (const f of fs.readdirSync(p)) chmod(path.join(p, f));
  };
  chmod(dst);
  return dst;
}

function editJson(file: string, edit: (j: Record<string, unknown>) => void): void {
  const j = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(j);
  fs.writeFileSync(file, JSON.stringify(j, null, 2));
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
}

function capture(): CliIO & { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  return {
    stdout: { write: (s: string) => (out += s) },
    stderr: { write: (s: string) => (err += s) },
    out: () => out,
    err: () => err,
  };
}

/** Raw safetensors bytes from a header object (or text) and a data section. */
function rawFile(header: object | string, data: Uint8Array): Buffer {
  const text = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(text.length));
  return Buffer.concat([prefix, text, data]);
}

const F32_TWO = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };

/** A prior folder (config + weights) copied from the hub. */
function priorFolder(): string {
  return copyTree(path.join(HUB_PRIOR, 'prior'), path.join(tmp(), 'prior'));
}

const PRIOR_WEIGHTS = 'diffusion_pytorch_model.safetensors';

// ---------------------------------------------------------------------------------------------------------------

describe('nothing is read outside the model folder', () => {
  test('a shard index naming "../" or an absolute path is an error naming the entry; nothing is opened', () => {
    const dir = priorFolder();
    const tensors = loadSafetensors(path.join(dir, PRIOR_WEIGHTS));
    fs.rmSync(path.join(dir, PRIOR_WEIGHTS));
    // a valid shard outside the folder, which must not be opened
    const outside = path.join(tmp(), 'outside.safetensors');
    writeSafetensors(outside, tensors);
    const keys = [...tensors.keys()];
    const indexFile = path.join(dir, 'diffusion_pytorch_model.safetensors.index.json');
    for (const name of ['../outside.safetensors', outside, 'sub/../../outside.safetensors']) {
      const weightMap = Object.fromEntries(keys.map((k) => [k, name]));
      fs.writeFileSync(indexFile, JSON.stringify({ metadata: {}, weight_map: weightMap }));
      const direct = errorOf(() => openCheckpoint(indexFile));
      expect(direct).toBeInstanceOf(SafetensorsError);
      expect((direct as SafetensorsError).key).toBe(keys[0]);
      expect(direct.message).toContain(JSON.stringify(name));
      const viaLoader = errorOf(() => prepareModel(dir, 'WuerstchenPrior'));
      expect(viaLoader).toBeInstanceOf(LoaderError);
      expect(viaLoader.message).toContain(`tensor ${JSON.stringify(keys[0])}`);
      expect(viaLoader.message).toMatch(
        /(leads out of the folder \(".."\)|is an absolute path); an index may only name files in its own folder/,
      );
    }
    expect(() => openCheckpoint(dir, { variant: '../../x' })).toThrow(/variant "..\/..\/x" may only hold letters/);
  });

  test('weights that are symbolic links into a blob store are followed (the Hugging Face cache layout)', () => {
    const dir = priorFolder();
    const blob = path.join(tmp(), 'blobs', 'a1b2c3');
    fs.mkdirSync(path.dirname(blob));
    fs.renameSync(path.join(dir, PRIOR_WEIGHTS), blob);
    fs.symlinkSync(path.relative(dir, blob), path.join(dir, PRIOR_WEIGHTS));
    const model = loadModel(dir, 'WuerstchenPrior');
    expect(model).toBeInstanceOf(WuerstchenPrior);
    model.dispose();
  });

  test('a FIFO or a folder in place of a weights or config file is refused without opening it (no hang)', () => {
    const fifo = path.join(tmp(), 'w.safetensors');
    execFileSync('mkfifo', [fifo]);
    const err = errorOf(() => openSafetensors(fifo));
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toBe(`${fifo}: is a FIFO, not a regular file`);
    fs.mkdirSync(path.join(tmp(), 'd.safetensors'));
    expect(() => openSafetensors(path.join(tmp(), 'd.safetensors'))).toThrow(/is a folder, not a regular file/);

    const dir = priorFolder();
    fs.rmSync(path.join(dir, 'config.json'));
    execFileSync('mkfifo', [path.join(dir, 'config.json')]);
    expect(() => prepareModel(dir, 'WuerstchenPrior')).toThrow(
      /config\.json: is a FIFO, not a regular file \(expected the WuerstchenPrior config\)/,
    );
  });

  test('errors never echo the bytes of a foreign file', () => {
    const secret = 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n';
    const dir = priorFolder();
    fs.writeFileSync(path.join(dir, PRIOR_WEIGHTS), secret);
    const asNumber = Buffer.from(secret).readBigUInt64LE(0).toString();
    const weightsError = errorOf(() => prepareModel(dir, 'WuerstchenPrior'));
    expect(weightsError).toBeInstanceOf(LoaderError);
    expect(weightsError.message).toMatch(/header length prefix exceeds the limit .*not a safetensors file/);
    for (const leak of ['root:x', 'daemon', asNumber]) expect(weightsError.message).not.toContain(leak);

    // the same text as a config.json or a tokenizer vocabulary
    fs.copyFileSync(path.join(HUB_PRIOR, 'prior', PRIOR_WEIGHTS), path.join(dir, PRIOR_WEIGHTS));
    fs.writeFileSync(path.join(dir, 'config.json'), secret);
    const configError = errorOf(() => prepareModel(dir, 'WuerstchenPrior'));
    expect(configError.message).toMatch(/config\.json: is not valid JSON \(syntax error\)/);
    expect(configError.message).not.toContain('root:x');
    const pipeline = copyTree(HUB_PRIOR, path.join(tmp(), 'pipeline'));
    fs.writeFileSync(path.join(pipeline, 'tokenizer', 'vocab.json'), secret);
    const tokenizerError = errorOf(() => WuerstchenPriorPipeline.fromPretrained(pipeline));
    expect(tokenizerError.message).toMatch(/vocab\.json is not valid JSON/);
    expect(tokenizerError.message).not.toContain('root:x');
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('strict safetensors', () => {
  test('offsets must cover the data section exactly: gaps and trailing bytes are errors naming the file', () => {
    const gap = path.join(tmp(), 'gap.safetensors');
    fs.writeFileSync(gap, rawFile({ a: F32_TWO, b: { ...F32_TWO, data_offsets: [12, 20] } }, new Uint8Array(20)));
    expect(() => openSafetensors(gap)).toThrow(
      `${gap}: tensor "b": data starts at 12, leaving bytes 8..12 of the data section unused`,
    );
    const lead = path.join(tmp(), 'lead.safetensors');
    fs.writeFileSync(lead, rawFile({ a: { ...F32_TWO, data_offsets: [4, 12] } }, new Uint8Array(12)));
    expect(() => openSafetensors(lead)).toThrow(/tensor "a": data starts at 4, leaving bytes 0\.\.4/);
    const trailing = path.join(tmp(), 'trailing.safetensors');
    fs.writeFileSync(trailing, rawFile({ a: F32_TWO }, new Uint8Array(9)));
    expect(() => openSafetensors(trailing)).toThrow(
      `${trailing}: the tensors cover 8 of the 9 bytes of the data section (1 trailing bytes)`,
    );
  });

  test('a key given twice is an error (JSON.parse would silently keep the last one)', () => {
    const file = path.join(tmp(), 'dup.safetensors');
    const entry = JSON.stringify(F32_TWO);
    fs.writeFileSync(file, rawFile(`{"a":${entry},"a":${entry}}`, new Uint8Array(8)));
    expect(() => openSafetensors(file)).toThrow(`${file}: header is not valid JSON (duplicate key "a")`);
    fs.writeFileSync(file, rawFile(`{"a":${entry},"\\u0061":${entry}}`, new Uint8Array(8)));
    expect(() => openSafetensors(file)).toThrow(/duplicate key "a"/);
    fs.writeFileSync(
      file,
      rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"dtype":"I32"}}`, new Uint8Array(8)),
    );
    expect(() => openSafetensors(file)).toThrow(/duplicate key "dtype" in "a"/);
    // the same key in two different objects is fine
    fs.writeFileSync(file, rawFile({ __metadata__: { a: 'x' }, a: F32_TWO }, new Uint8Array(8)));
    const reader = openSafetensors(file);
    expect(reader.keys()).toEqual(['a']);
    reader.close();
  });

  test('non-finite weights are reported at load naming the tensor, unless explicitly allowed', () => {
    const dir = priorFolder();
    const file = path.join(dir, PRIOR_WEIGHTS);
    const tensors = loadSafetensors(file);
    const key = 'blocks.1.mapper.weight';
    const t = tensors.get(key)!;
    const data = Float32Array.from(t.data as Float32Array);
    data[3] = NaN;
    data[7] = -Infinity;
    tensors.set(key, { ...t, data } as HostTensor);
    writeSafetensors(file, tensors);
    const err = errorOf(() => loadModel(dir, 'WuerstchenPrior'));
    expect(err).toBeInstanceOf(NonFiniteWeightError);
    expect(err.message).toBe(
      `${file}: tensor "${key}" holds 2 non-finite values (first: NaN); the weights are corrupt or diverged ` +
        '(pass allowNonFinite / --allow-nonfinite to load them anyway)',
    );
    const model = loadModel(dir, 'WuerstchenPrior', { allowNonFinite: true });
    model.dispose();
    const base = ['--prior', HUB_PRIOR, '--decoder', HUB_DECODER, '--prompt', 'x', '--out', path.join(tmp(), 'x.png')];
    expect(parseGenerateArgs(base).allowNonFinite).toBe(false);
    expect(parseGenerateArgs([...base, '--allow-nonfinite']).allowNonFinite).toBe(true);
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('configs are validated before any module is built', () => {
  test('absurd sizes, wrong types and inconsistent lists name the file and field', () => {
    const dir = priorFolder();
    const configFile = path.join(dir, 'config.json');
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ depth: 1_000_000 }, /"depth" must be an integer from 1 to 256, got 1000000/],
      [{ c: '64' }, /"c" must be an integer from 1 to 16384, got "64"/],
      [{ c: 1e300 }, /"c" must be an integer/],
      [{ nhead: 3 }, /"c" \(64\) must be divisible by "nhead" \(3\)/],
      [{ dropout: 1 }, /"dropout" must be a number in \[0, 1\), got 1/],
    ];
    for (const [edit, message] of cases) {
      copyTree(path.join(HUB_PRIOR, 'prior'), dir);
      editJson(configFile, (j) => Object.assign(j, edit));
      const err = errorOf(() => prepareModel(dir, 'WuerstchenPrior'));
      expect(err).toBeInstanceOf(LoaderError);
      expect(err.message).toContain(`${configFile}: `);
      expect(err.message).toMatch(message);
    }
    // the trainers build models from configs too: the constructors run the same parsers
    expect(() => new WuerstchenPrior({ depth: 1_000_000 })).toThrow(ConfigError);
    expect(() => new WuerstchenDiffNeXt({ blocks: [1, 1] })).toThrow(/"blocks" has 2 entries but "c_hidden" has 4/);
    expect(() => new WuerstchenDiffNeXt({ c_hidden: Array(9).fill(8) })).toThrow(
      /"c_hidden" must be a list of 1 to 8 integers/,
    );
    expect(() => new WuerstchenDiffNeXt({ level_config: ['CT', 'CTA', 'CTX', 'CTA'] })).toThrow(
      /"level_config" must be a list/,
    );
    expect(() => new PaellaVQModel({ levels: 8, embed_dim: 16 })).toThrow(
      /"embed_dim" \(16\) is too small for 8 levels/,
    );
    expect(() => new CLIPTextModel({ num_hidden_layers: 1_000_000 })).toThrow(
      /"num_hidden_layers" must be an integer from 1 to 256/,
    );
  });

  test('the parameter count must match the weights file; the field that explains the difference is named', () => {
    const dir = priorFolder();
    const configFile = path.join(dir, 'config.json');
    editJson(configFile, (j) => (j.depth = 40));
    const err = errorOf(() => prepareModel(dir, 'WuerstchenPrior'));
    expect(err).toBeInstanceOf(LoaderError);
    expect(err.message).toMatch(
      new RegExp(
        `^${configFile}: describes a WuerstchenPrior with \\d+ parameter values, but ${path.join(dir, PRIOR_WEIGHTS)} holds \\d+; the weights fit "depth" = 2 \\(not 40\\)$`,
      ),
    );
    const te = copyTree(path.join(HUB_PRIOR, 'text_encoder'), path.join(tmp(), 'text_encoder'));
    editJson(path.join(te, 'config.json'), (j) => (j.vocab_size = (j.vocab_size as number) + 10));
    // max_position_embeddings − 10 would give the same count, but not the same shapes
    expect(() => prepareModel(te, 'CLIPTextModel')).toThrow(/; the weights fit "vocab_size" = \d+ \(not \d+\)$/);
    // two fields changed: no single one explains it, so the keys and shapes that differ are listed
    const two = priorFolder();
    editJson(path.join(two, 'config.json'), (j) => Object.assign(j, { c: 32, depth: 3 }));
    const listed = errorOf(() => prepareModel(two, 'WuerstchenPrior'));
    expect(listed).toBeInstanceOf(StateDictError);
    expect(listed.message).toMatch(
      /describes a WuerstchenPrior with \d+ parameter values, but .* holds \d+\n {2}missing keys/,
    );
  });

  test('one key and shape comparison per model: prepareModel checks the headers, load() does not compare again', () => {
    const compare = jest.spyOn(Module.prototype, 'compareStateDict');
    try {
      const prepared = prepareModel(path.join(HUB_PRIOR, 'prior'), 'WuerstchenPrior');
      expect(compare).toHaveBeenCalledTimes(1);
      prepared.load().dispose();
      prepared.load().dispose();
      expect(compare).toHaveBeenCalledTimes(1);
    } finally {
      compare.mockRestore();
    }
  });

  test('a fromPretrained load compares each of its five models once, however often they are read again', () => {
    const compare = jest.spyOn(Module.prototype, 'compareStateDict');
    try {
      const pipe = WuerstchenCombinedPipeline.fromPretrained(HUB_PRIOR, HUB_DECODER);
      expect(compare).toHaveBeenCalledTimes(5);
      const { priorPipe, decoderPipe } = pipe;
      const handles = [
        priorPipe.prior,
        priorPipe.textEncoder,
        decoderPipe.decoder,
        decoderPipe.textEncoder,
        decoderPipe.vqgan,
      ];
      for (const round of [1, 2]) {
        for (const h of handles) {
          h.get();
          h.release();
        }
        expect({ round, comparisons: compare.mock.calls.length }).toEqual({ round, comparisons: 5 });
      }
    } finally {
      compare.mockRestore();
    }
  });

  test('weights replaced after prepareModel are still checked as load() reads them, and nothing leaks', () => {
    const dir = priorFolder();
    const prepared = prepareModel(dir, 'WuerstchenPrior');
    const file = path.join(dir, PRIOR_WEIGHTS);
    const tensors = loadSafetensors(file);
    const [key, t] = [...tensors].find(([, v]) => v.shape.length === 2 && v.shape[0] !== v.shape[1])!;
    tensors.set(key, { ...t, shape: [t.shape[1], t.shape[0]] });
    writeSafetensors(file, tensors);
    const before = tf.memory().numTensors;
    const err = errorOf(() => prepared.load());
    expect(err).toBeInstanceOf(StateDictError);
    const tensorCount = new WuerstchenPrior(prepared.config).namedParameters().length;
    expect(err.message.split('\n')).toEqual([
      `${file}: the weights do not match ${path.join(dir, 'config.json')} (a WuerstchenPrior with ${tensorCount} tensors):`,
      `  ${key}: shape [${t.shape[1]}, ${t.shape[0]}], but the config needs [${t.shape[0]}, ${t.shape[1]}]`,
    ]);
    expect(tf.memory().numTensors).toBe(before);
  });

  test('each count formula equals the parameters of the module it describes', () => {
    const hub = (p: string) =>
      JSON.parse(fs.readFileSync(path.join(p, 'config.json'), 'utf8')) as Record<string, unknown>;
    const stage = (name: string) =>
      (JSON.parse(fs.readFileSync(path.join(CONFIGS, name), 'utf8')) as { model: Record<string, unknown> }).model;
    for (const json of [
      {},
      hub(path.join(HUB_PRIOR, 'prior')),
      stage('stage-c.json'),
      stage('tiny-c.json'),
      { c: 30, nhead: 3, c_r: 63 },
    ]) {
      expect(PRIOR_SCHEMA.count(parsePriorConfig(json))).toBe(new WuerstchenPrior(json).numParameters());
    }
    for (const json of [{}, hub(path.join(HUB_DECODER, 'decoder')), stage('stage-b-tiny.json'), stage('tiny-b.json')]) {
      expect(DIFFNEXT_SCHEMA.count(parseDiffNeXtConfig(json))).toBe(new WuerstchenDiffNeXt(json).numParameters());
    }
    for (const json of [
      {},
      hub(path.join(HUB_DECODER, 'vqgan')),
      stage('stage-a-tiny.json'),
      { levels: 3, bottleneck_blocks: 0, embed_dim: 24 },
    ]) {
      expect(PAELLA_VQ_SCHEMA.count(parsePaellaVQConfig(json))).toBe(new PaellaVQModel(json).numParameters());
    }
    for (const json of [{}, hub(path.join(HUB_PRIOR, 'text_encoder')), CLIP_TEXT_BIGG, CLIP_TEXT_H] as Record<
      string,
      unknown
    >[]) {
      expect(CLIP_TEXT_SCHEMA.count(parseCLIPTextConfig(json))).toBe(new CLIPTextModel(json).numParameters());
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('wuerstchen generate refuses hostile command lines before loading anything', () => {
  const base = () => [
    'generate',
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
    [['--prior-guidance', '0x10'], /--prior-guidance must be a number >= 0, got "0x10" \(decimal notation only/],
    [['--decoder-guidance', '1e3'], /--decoder-guidance must be a number >= 0, got "1e3"/],
    [['--prior-guidance', ' 4'], /--prior-guidance must be a number >= 0, got " 4"/],
    [['--prior-guidance', 'Infinity'], /--prior-guidance must be a number >= 0/],
    [['--width', '12abc'], /--width must be a positive integer, got "12abc" \(decimal digits only\)/],
    [['--seed', '0x10'], /--seed must be a non-negative integer, got "0x10" \(decimal digits only\)/],
    [['--seed', '9007199254740993'], /--seed must be a non-negative integer below 2\^53, got "9007199254740993"/],
    [['--images', '1e3'], /--images must be a positive integer, got "1e3"/],
    [
      ['--prompt', '--help'],
      /--prompt needs a value, but the next argument is the option --help \(write --prompt=--help if that is the value\)/,
    ],
    [['--negative-prompt', '-h'], /--negative-prompt needs a value, but the next argument is the option -h/],
    [['--prior-steps', '1000000000'], /--prior-steps 1000000000 is above the limit of 1000/],
    [['--decoder-steps', '1001'], /--decoder-steps 1001 is above the limit of 1000/],
    [['--images', '100000'], /--images 100000 is above the limit of 64 images per run/],
    [['--images', '40', '--prompt', 'a dog'], /--images 40 × 2 prompts = 80 images is above the limit of 64/],
    [['--width', '6144'], /--width 6144 is above the limit of 4096/],
  ])('%j → exit 2', async (extra, message) => {
    const io = capture();
    expect(await main([...base(), ...extra], io)).toBe(2);
    expect(io.err()).toMatch(message);
    expect(io.out()).toBe('');
  });

  test('a value is taken literally in the --name=value form', () => {
    expect(parseGenerateArgs([...base().slice(1), '--prompt=--help']).prompts).toEqual(['a cat', '--help']);
  });

  test('the memory estimate is checked up front and given in the error', async () => {
    const io = capture();
    expect(
      await main(
        [...base(), '--width', '1024', '--height', '1024', '--images', '4', '--max-memory', '64', '--backend', 'cpu'],
        io,
      ),
    ).toBe(2);
    expect(io.err()).toMatch(
      /this run would need about \d+ MiB \(weights \d+ MiB, (prior|decoder|vqgan) activations \d+ MiB\), more than --max-memory 64; lower --width\/--height or --images/,
    );
    expect(fs.readdirSync(tmp())).toEqual([]);
  });

  test('--out is checked before the run: a folder, a missing folder, an unwritable folder', async () => {
    const outDir = path.join(tmp(), 'x.png');
    fs.mkdirSync(outDir);
    let io = capture();
    expect(await main(base(), io)).toBe(2);
    expect(io.err()).toContain(`--out: ${outDir} is a folder`);
    io = capture();
    fs.mkdirSync(path.join(tmp(), 'y-2.png'));
    expect(await main([...base().slice(0, -1), path.join(tmp(), 'y.png'), '--images', '2'], io)).toBe(2);
    expect(io.err()).toContain(`--out: ${path.join(tmp(), 'y-2.png')} is a folder`);
    io = capture();
    expect(await main([...base().slice(0, -1), path.join(tmp(), 'none', 'x.png')], io)).toBe(2);
    expect(io.err()).toMatch(/--out: folder .*none does not exist/);
    // root ignores permission bits; procfs's /proc/sys refuses writes even to root
    let locked = '/proc/sys';
    if (process.getuid?.() !== 0) {
      locked = path.join(tmp(), 'locked');
      fs.mkdirSync(locked, { mode: 0o555 });
    }
    io = capture();
    expect(await main([...base().slice(0, -1), path.join(locked, 'x.png')], io)).toBe(2);
    expect(io.err()).toContain(`--out: folder ${locked} is not writable`);
  });

  test('SIGINT and SIGTERM remove the temporary files of unfinished writes and exit 130 / 143', () => {
    for (const [signal, code] of [
      ['SIGINT', 130],
      ['SIGTERM', 143],
    ] as const) {
      const proc = new EventEmitter() as EventEmitter & { exit: jest.Mock };
      proc.exit = jest.fn();
      const stderr = capture().stderr;
      exitOnInterrupt(proc as unknown as NodeJS.Process, stderr);
      const temp = path.join(tmp(), `.x.png.tmp-${signal}`);
      fs.writeFileSync(temp, 'partial');
      const finished = path.join(tmp(), `.y.png.tmp-${signal}`);
      fs.writeFileSync(finished, 'renamed');
      registerTempFile(finished)();
      registerTempFile(temp);
      proc.emit(signal);
      expect(fs.existsSync(temp)).toBe(false);
      expect(fs.existsSync(finished)).toBe(true);
      expect(proc.exit).toHaveBeenCalledWith(code);
    }
  });
});

// ---------------------------------------------------------------------------------------------------------------

describe('NaN images are an error, not a black PNG', () => {
  test('tensorToPng refuses non-finite pixels', async () => {
    const nan = tf.fill([1, 2, 2, 3], NaN);
    await expect(tensorToPng(nan)).rejects.toThrow(new NonFiniteImageError(0, 12, 12));
    nan.dispose();
  });

  test('NaN weights are refused at load; allowed with --allow-nonfinite, the NaN image is exit 1 and no file', async () => {
    const decoder = copyTree(HUB_DECODER, path.join(tmp(), 'decoder'));
    const file = path.join(decoder, 'vqgan', 'diffusion_pytorch_model.safetensors');
    const tensors = loadSafetensors(file);
    // the last convolution: every output pixel reads all of its weights
    for (const k of ['out_block.0.weight', 'out_block.0.bias']) {
      const t = tensors.get(k)!;
      tensors.set(k, { ...t, data: new Float32Array(t.data.length).fill(NaN) });
    }
    writeSafetensors(file, tensors);
    const outDir = path.join(tmp(), 'out');
    fs.mkdirSync(outDir);
    const argv = [
      'generate',
      '--prior',
      HUB_PRIOR,
      '--decoder',
      decoder,
      '--prompt',
      'a cat',
      '--width',
      '128',
      '--height',
      '128',
    ];
    const run = [
      '--prior-steps',
      '1',
      '--decoder-steps',
      '1',
      '--seed',
      '1',
      '--backend',
      'cpu',
      '--out',
      path.join(outDir, 'x.png'),
    ];
    expect(() => loadModel(path.join(decoder, 'vqgan'), 'PaellaVQModel')).toThrow(
      /vqgan.*tensor "[^"]+" holds \d+ non-finite values \(first: NaN\)/,
    );
    const io = capture();
    expect(await main([...argv, ...run, '--allow-nonfinite'], io)).toBe(1);
    expect(io.err()).toMatch(/error: image 1 has 49152 of its 49152 values NaN or infinite .*no PNG written/);
    expect(fs.readdirSync(outDir)).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG, so every run mutates the same way. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe('fuzz', () => {
  test('2,000 seeded mutations of a valid safetensors file: each loads or is a named SafetensorsError', () => {
    const valid = path.join(tmp(), 'valid.safetensors');
    writeSafetensors(
      valid,
      {
        'a.weight': { dtype: 'F32', shape: [2, 3], data: Float32Array.from([1, -2, 3.5, 0, 1e-3, 7]) },
        'b.half': { dtype: 'F16', shape: [4], data: Float32Array.from([0.5, -1, 2, 65504]) },
        'c.steps': { dtype: 'I64', shape: [], data: BigInt64Array.of(12n) },
        'd.mask': { dtype: 'BOOL', shape: [3], data: Uint8Array.of(1, 0, 1) },
      },
      { format: 'pt', note: 'fuzz' },
    );
    const original = fs.readFileSync(valid);
    const headerEnd = 8 + Number(original.readBigUInt64LE(0));
    const random = prng(10);
    const int = (n: number) => Math.floor(random() * n);
    const mutations: ((b: Buffer<ArrayBufferLike>) => Buffer<ArrayBufferLike>)[] = [
      (b) => {
        b[int(b.length)] = int(256);
        return b;
      }, // any byte
      (b) => {
        b[int(headerEnd)] ^= 1 << int(8);
        return b;
      }, // a bit in the prefix or header
      (b) => {
        const i = 8 + int(headerEnd - 8);
        b[i] = '{}[]":,0123456789-.eE '.charCodeAt(int(22));
        return b;
      }, // JSON syntax
      (b) => b.subarray(0, int(b.length)), // truncated
      (b) => Buffer.concat([b, Buffer.from(Array.from({ length: 1 + int(16) }, () => int(256)))]), // trailing bytes
      (b) => {
        const i = int(headerEnd);
        return Buffer.concat([b.subarray(0, i), b.subarray(i + 1 + int(4))]);
      }, // bytes deleted
      (b) => {
        b.writeBigUInt64LE(BigInt(int(2 ** 31)) * BigInt(int(3) === 0 ? 2 ** 32 : 1), 0);
        return b;
      }, // length prefix
      (b) => {
        const i = 8 + int(headerEnd - 8);
        return Buffer.concat([b.subarray(0, i), Buffer.from(`"x${int(9)}"`), b.subarray(i)]);
      }, // text inserted
    ];
    const outcomes = { loaded: 0, rejected: 0 };
    const target = path.join(tmp(), 'mutated.safetensors');
    for (let i = 0; i < 2000; i++) {
      let bytes: Buffer<ArrayBufferLike> = Buffer.from(original);
      for (let n = 1 + int(3); n > 0; n--) bytes = mutations[int(mutations.length)](bytes);
      fs.writeFileSync(target, bytes);
      try {
        const reader = openSafetensors(target);
        try {
          for (const key of reader.keys()) reader.get(key);
        } finally {
          reader.close();
        }
        outcomes.loaded++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) throw new Error(`mutation ${i}: ${(e as Error).stack}`);
        expect(e.message.startsWith(`${target}: `)).toBe(true);
        outcomes.rejected++;
      }
    }
    expect(outcomes.loaded + outcomes.rejected).toBe(2000);
    expect(outcomes.rejected).toBeGreaterThan(1000);
    expect(outcomes.loaded).toBeGreaterThan(0);
  });
});
