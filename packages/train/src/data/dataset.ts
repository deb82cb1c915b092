/**
 * Image–caption datasets:
 *  (a) a folder of images with same-named `.txt` captions (searched recursively),
 *  (b) a JSONL manifest (`{"file_name": "a.png", "text": "…"}` per line; also `image`/`path`
 *      and `caption`/`prompt`; a list of captions picks one at random per use),
 *  (c) WebDataset `.tar` shards, streamed entry by entry (a shard is never loaded whole):
 *      `--data shards/` (every `.tar` in the folder), `--data a.tar`, `--data 'x-{000..009}.tar'`
 *      or a comma-separated list.
 *
 * Iteration is deterministic given the seed: each epoch visits items (folder/JSONL) or shards
 * (WebDataset) in a seeded permutation; WebDataset samples also pass a seeded shuffle buffer. The
 * {@link DataPosition} saved in a checkpoint restores the stream exactly (WebDataset: the shard is
 * re-read up to the saved sample without decoding images).
 *
 * Hostile data costs a counted warning, not the run: an unreadable image, one whose header declares
 * more than `maxImagePixels` (checked before decoding), a missing caption, a manifest line that is
 * not a JSON object, and a shard that is not a valid tar (the rest of that shard) are skipped.
 * With `strict` each of these is a DatasetError instead. A source with nothing usable is an error
 * naming it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Generator } from 'wuerstchen';
import { deriveSeed } from '../rng';
import {
  DEFAULT_MAX_IMAGE_PIXELS,
  ImageDecodeError,
  ImageTooLargeError,
  RGBImage,
  decodeImage,
  maxEncodedImageBytes,
} from './image';
import { TarError, TarReader, WdsRawSample, wdsSamples } from './tar';

export const IMAGE_EXTENSIONS = ['png', 'jpg', 'jpeg'];

export interface DataPosition {
  epoch: number;
  /** folder/JSONL: index into the epoch permutation; WebDataset: index into the shard permutation. */
  index: number;
  /** WebDataset: samples already emitted from the current shard. */
  emitted: number;
  /** raw samples consumed since the start of training (the augmentation seed of each sample). */
  consumed: number;
  /** usable samples seen in the current epoch (an epoch with none is an error). */
  usableInEpoch: number;
}

export interface DataWarnings {
  unreadable: number;
  missingCaption: number;
  /** images over the pixel (or byte) limit, skipped before decoding. */
  oversized: number;
  /** manifest lines that are not a JSON object naming an image. */
  malformed: number;
  /** shards that are not valid tar archives (their remaining samples are skipped). */
  badShards: number;
}

const WARNING_NAMES: Record<keyof DataWarnings, string> = {
  unreadable: 'unreadable image(s)',
  oversized: 'oversized image(s)',
  missingCaption: 'sample(s) without a caption',
  malformed: 'malformed manifest line(s)',
  badShards: 'bad shard(s)',
};

/** Counts of hostile or broken items found so far; `kind` says what was skipped, `detail` why. */
type SkipReport = (id: string, kind: keyof DataWarnings, detail: string) => void;

/** A caption is a short text; a larger entry is not read. */
const MAX_CAPTION_BYTES = 1 << 20;

export interface DataState {
  position: DataPosition;
  warnings: DataWarnings;
  /** ids already warned about (warnings are counted once per item). */
  warned: string[];
}

export interface Sample {
  id: string;
  image: RGBImage;
  caption: string;
  /** a generator private to this sample (crops, flips, caption choice), derived from the run seed. */
  rng: Generator;
}

interface RawSample {
  id: string;
  load: () => Buffer;
  caption: string | string[] | undefined;
}

/** Where a raw sample stream comes from; `next()` cycles epochs forever. */
interface RawSource {
  readonly description: string;
  next(pos: DataPosition): RawSample;
  /** called after restoring a position (drop cached iterators). */
  reset(): void;
  close(): void;
}

export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}

function listImagesRecursive(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of fs
      .readdirSync(dir, { withFileTypes: true })
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (IMAGE_EXTENSIONS.includes(path.extname(e.name).slice(1).toLowerCase())) out.push(p);
    }
  };
  walk(root);
  return out;
}

/** Folder and JSONL sources: a fixed item list visited in a seeded permutation per epoch. */
class ListSource implements RawSource {
  private perm: number[] | null = null;
  private permEpoch = -1;
  constructor(
    readonly description: string,
    private readonly items: RawSample[],
    private readonly seed: number,
  ) {}
  next(pos: DataPosition): RawSample {
    if (pos.index >= this.items.length) {
      pos.epoch++;
      pos.index = 0;
    }
    if (this.permEpoch !== pos.epoch) {
      this.perm = new Generator(deriveSeed(this.seed, 'shuffle', pos.epoch)).permutation(this.items.length);
      this.permEpoch = pos.epoch;
    }
    return this.items[this.perm![pos.index++]];
  }
  reset(): void {
    this.permEpoch = -1;
  }
  close(): void {}
}

/** A caption field of a JSON record: a string, or a non-empty list of strings (one is picked per use). */
function isCaption(c: unknown): c is string | string[] {
  return typeof c === 'string' || (Array.isArray(c) && c.length > 0 && c.every((x) => typeof x === 'string'));
}

function readCaptionFile(p: string): string | undefined {
  try {
    return fs.readFileSync(p, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/** An image file's bytes: regular files only (a FIFO would block), and no more than `maxBytes`. */
function readImageFile(p: string, maxBytes: number): Buffer {
  const st = fs.statSync(p);
  if (!st.isFile()) throw new ImageDecodeError('not a regular file');
  if (st.size > maxBytes)
    throw new ImageTooLargeError(
      `the file is ${st.size} bytes, over the ${maxBytes} an image within max_image_pixels can take`,
    );
  return fs.readFileSync(p);
}

/** WebDataset shards: seeded shard order per epoch, seeded shuffle buffer within a shard. */
class WdsSource implements RawSource {
  private reader: TarReader | null = null;
  private stream: Iterator<WdsRawSample> | null = null;
  private buffer: WdsRawSample[] = [];
  private bufRng: Generator | null = null;
  private shardOrder: number[] | null = null;
  private orderEpoch = -1;
  private openShard = -1;
  private openEpoch = -1;
  private streamDone = false;
  private file = '';
  static readonly WANTED = new Set([...IMAGE_EXTENSIONS, 'txt', 'json']);

  constructor(
    readonly description: string,
    private readonly shards: string[],
    private readonly seed: number,
    private readonly bufferSize: number,
    private readonly maxImageBytes: number,
    private readonly report: SkipReport,
  ) {}

  private order(epoch: number): number[] {
    if (this.orderEpoch !== epoch) {
      this.shardOrder = new Generator(deriveSeed(this.seed, 'shards', epoch)).permutation(this.shards.length);
      this.orderEpoch = epoch;
    }
    return this.shardOrder!;
  }

  /** The rest of the open shard is unreadable: keep what is buffered, read no further. */
  private badShard(e: unknown): void {
    if (!(e instanceof TarError)) throw e;
    this.streamDone = true;
    this.report(this.file, 'badShards', `not a valid tar shard, its remaining samples are skipped (${e.detail})`);
  }

  private open(pos: DataPosition): void {
    this.closeShard();
    this.file = this.shards[this.order(pos.epoch)[pos.index]];
    this.buffer = [];
    this.streamDone = false;
    this.bufRng = new Generator(deriveSeed(this.seed, 'buffer', pos.epoch, pos.index));
    this.openShard = pos.index;
    this.openEpoch = pos.epoch;
    try {
      this.reader = new TarReader(this.file);
      this.stream = wdsSamples(this.reader, WdsSource.WANTED, (ext) =>
        IMAGE_EXTENSIONS.includes(ext) ? this.maxImageBytes : MAX_CAPTION_BYTES,
      );
    } catch (e) {
      this.badShard(e);
    }
    // replay the buffer up to the saved position, without decoding anything
    for (let i = 0; i < pos.emitted; i++) if (!this.pick()) break;
  }

  private fill(): void {
    while (!this.streamDone && this.buffer.length < this.bufferSize) {
      let r: IteratorResult<WdsRawSample>;
      try {
        r = this.stream!.next();
      } catch (e) {
        this.badShard(e);
        return;
      }
      if (r.done) this.streamDone = true;
      else this.buffer.push(r.value);
    }
  }

  private pick(): WdsRawSample | undefined {
    this.fill();
    if (this.buffer.length === 0) return undefined;
    const j = this.bufRng!.int(this.buffer.length);
    const s = this.buffer[j];
    this.buffer[j] = this.buffer[this.buffer.length - 1];
    this.buffer.pop();
    return s;
  }

  next(pos: DataPosition): RawSample {
    for (let guard = 0; guard <= this.shards.length + 1; guard++) {
      if (pos.index >= this.shards.length) {
        pos.epoch++;
        pos.index = 0;
        pos.emitted = 0;
      }
      if (this.openShard !== pos.index || this.openEpoch !== pos.epoch) this.open(pos);
      const s = this.pick();
      if (s) {
        pos.emitted++;
        return this.rawSample(s);
      }
      this.closeShard();
      pos.index++;
      pos.emitted = 0;
    }
    throw new DatasetError(`${this.description}: the shards contain no readable samples`);
  }

  private rawSample(s: WdsRawSample): RawSample {
    const imageExt = IMAGE_EXTENSIONS.find((e) => s.files.has(e));
    let caption: string | string[] | undefined;
    if (s.files.has('txt')) caption = s.files.get('txt')!.toString('utf8').trim();
    else if (s.files.has('json')) {
      try {
        const j = JSON.parse(s.files.get('json')!.toString('utf8')) as Record<string, unknown>;
        const c = j.caption ?? j.text ?? j.prompt;
        if (isCaption(c)) caption = c;
      } catch {
        caption = undefined;
      }
    }
    return {
      id: `${this.file}:${s.key}`,
      caption,
      load: () => {
        if (imageExt) return s.files.get(imageExt)!;
        const big = IMAGE_EXTENSIONS.find((e) => s.oversized.has(e));
        if (big)
          throw new ImageTooLargeError(
            `its .${big} entry is ${s.oversized.get(big)} bytes, over the ${this.maxImageBytes} an image within max_image_pixels can take`,
          );
        throw new ImageDecodeError(`no image entry (.${IMAGE_EXTENSIONS.join('/.')})`);
      },
    };
  }

  private closeShard(): void {
    this.reader?.close();
    this.reader = null;
    this.stream = null;
    this.openShard = -1;
  }

  reset(): void {
    this.closeShard();
    this.orderEpoch = -1;
  }

  close(): void {
    this.closeShard();
  }
}

/** Shard patterns expand to at most this many names (a typo like `{0..99999999}` must not fill memory). */
export const MAX_BRACE_EXPANSION = 100_000;

/**
 * Expand `a-{000..009}.tar` and `{a,b}` brace patterns (innermost first), to at most `limit` names;
 * a pattern that would give more is a DatasetError.
 */
export function expandBraces(pattern: string, limit = MAX_BRACE_EXPANSION): string[] {
  const tooMany = () => new DatasetError(`shard pattern ${pattern} expands to more than ${limit} names`);
  const done: string[] = [];
  let todo = [pattern];
  // breadth first: every name of a round has the same braces left, so the order is that of a depth-first expansion
  while (todo.length) {
    const next: string[] = [];
    for (const p of todo) {
      const m = /\{([^{}]*)\}/.exec(p);
      if (!m) {
        done.push(p);
        continue;
      }
      const pre = p.slice(0, m.index);
      const post = p.slice(m.index + m[0].length);
      const range = /^(\d+)\.\.(\d+)$/.exec(m[1]);
      if (range) {
        const [from, to] = [Number(range[1]), Number(range[2])];
        if (to - from + 1 > limit - done.length - next.length) throw tooMany();
        for (let i = from; i <= to; i++) next.push(pre + String(i).padStart(range[1].length, '0') + post);
      } else for (const alt of m[1].split(',')) next.push(pre + alt + post);
      if (done.length + next.length > limit) throw tooMany();
    }
    todo = next;
  }
  return done;
}

export interface DatasetOptions {
  seed: number;
  /** WebDataset shuffle buffer (samples); default 44 as in dome272's loader. */
  shuffleBuffer?: number;
  /** Print at most this many individual warnings (default 20); all are counted. */
  maxWarningsPrinted?: number;
  /** images declaring more pixels than this are skipped before decoding (default {@link DEFAULT_MAX_IMAGE_PIXELS}). */
  maxImagePixels?: number;
  /** every skip (bad shard, unreadable or oversized image, missing caption, malformed line) is a DatasetError instead. */
  strict?: boolean;
  log?: (line: string) => void;
}

const strictError = (id: string, detail: string): DatasetError =>
  new DatasetError(`${id}: ${detail} (strict data mode: --strict-data / "strict_data": true)`);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

interface OpenContext {
  opts: DatasetOptions;
  maxImageBytes: number;
  /** a skip found while iterating (counted once per id). */
  report: SkipReport;
  /** skips found while listing the source (counted here, summarised in one line). */
  counts: DataWarnings;
}

/** Detect the source kind and build it. */
function openSource(spec: string, ctx: OpenContext): RawSource {
  const { opts } = ctx;
  const wds = (shards: string[]) =>
    new WdsSource(`WebDataset ${spec}`, shards, opts.seed, opts.shuffleBuffer ?? 44, ctx.maxImageBytes, ctx.report);
  const specs = spec.includes(',')
    ? spec
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean)
    : [spec];
  const isTarSpec = (s: string) => s.endsWith('.tar') || /\{.*\}/.test(s);
  if (specs.length > 1 || isTarSpec(spec)) {
    const shards: string[] = [];
    for (const s of specs) {
      shards.push(...expandBraces(s));
      if (shards.length > MAX_BRACE_EXPANSION)
        throw new DatasetError(`WebDataset ${spec}: names more than ${MAX_BRACE_EXPANSION} shards`);
    }
    if (!shards.length) throw new DatasetError(`WebDataset ${spec}: names no shards`);
    const missing = shards.filter((s) => !fs.existsSync(s));
    if (missing.length)
      throw new DatasetError(
        `WebDataset ${spec}: missing shard(s): ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`,
      );
    return wds(shards);
  }
  if (!fs.existsSync(spec)) throw new DatasetError(`dataset ${spec} does not exist`);
  const stat = fs.statSync(spec);
  if (stat.isFile() && /\.jsonl?$/i.test(spec)) return openJsonl(spec, ctx);
  if (!stat.isDirectory())
    throw new DatasetError(`dataset ${spec}: expected a folder, a .jsonl manifest or .tar shards`);
  const tars = fs
    .readdirSync(spec)
    .filter((f) => f.endsWith('.tar'))
    .sort();
  const images = listImagesRecursive(spec);
  if (tars.length && !images.length) return wds(tars.map((t) => path.join(spec, t)));
  const items: RawSample[] = [];
  for (const img of images) {
    const txt = img.slice(0, img.length - path.extname(img).length) + '.txt';
    const caption = readCaptionFile(txt);
    if (caption === undefined) {
      if (opts.strict) throw strictError(img, 'no same-named .txt caption');
      ctx.counts.missingCaption++;
      continue;
    }
    items.push({ id: img, caption, load: () => readImageFile(img, ctx.maxImageBytes) });
  }
  const missingCaption = ctx.counts.missingCaption;
  if (missingCaption)
    opts.log?.(`warning: ${spec}: ${missingCaption} image(s) without a same-named .txt caption were skipped`);
  if (!items.length) {
    throw new DatasetError(
      `dataset ${spec} has nothing usable: ${images.length} image(s), ${missingCaption} without a caption (.png/.jpg/.jpeg with same-named .txt expected)`,
    );
  }
  return new ListSource(`folder ${spec}`, items, opts.seed);
}

function openJsonl(file: string, ctx: OpenContext): RawSource {
  const { opts, counts } = ctx;
  const dir = path.dirname(file);
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  const items: RawSample[] = [];
  const max = opts.maxWarningsPrinted ?? 20;
  const malformed = (line: number, detail: string) => {
    if (opts.strict) throw strictError(`${file}:${line}`, detail);
    counts.malformed++;
    if (counts.malformed <= max) opts.log?.(`warning: ${file}:${line}: ${detail}, skipped`);
    else if (counts.malformed === max + 1)
      opts.log?.(`warning: ${file}: further malformed lines are counted but not printed`);
  };
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let rec: unknown;
    try {
      rec = JSON.parse(line);
    } catch {
      return malformed(i + 1, 'not valid JSON');
    }
    if (!isObject(rec)) return malformed(i + 1, `not a JSON object (${line.trim().slice(0, 40)})`);
    const img = rec.file_name ?? rec.image ?? rec.path ?? rec.file;
    const cap = rec.text ?? rec.caption ?? rec.prompt;
    if (typeof img !== 'string' || !img) return malformed(i + 1, 'no "file_name"/"image" string field');
    if (!isCaption(cap)) {
      if (opts.strict) throw strictError(`${file}:${i + 1}`, 'no caption ("text"/"caption"/"prompt")');
      counts.missingCaption++;
      return;
    }
    const p = path.isAbsolute(img) ? img : path.join(dir, img);
    items.push({ id: `${file}:${i + 1}`, caption: cap, load: () => readImageFile(p, ctx.maxImageBytes) });
  });
  if (counts.missingCaption)
    opts.log?.(`warning: ${file}: ${counts.missingCaption} record(s) without a caption were skipped`);
  if (!items.length) {
    throw new DatasetError(
      `dataset ${file} has nothing usable: ${counts.missingCaption + counts.malformed} record(s), ${counts.missingCaption} without a caption, ${counts.malformed} malformed`,
    );
  }
  return new ListSource(`JSONL ${file}`, items, opts.seed);
}

/** The sample stream the trainers read; its {@link DataState} goes into every checkpoint. */
export class ImageTextDataset {
  private readonly source: RawSource;
  private pos: DataPosition = { epoch: 0, index: 0, emitted: 0, consumed: 0, usableInEpoch: 0 };
  readonly warnings: DataWarnings = { unreadable: 0, missingCaption: 0, oversized: 0, malformed: 0, badShards: 0 };
  private warned = new Set<string>();
  private printed = 0;
  private readonly maxPixels: number;

  constructor(
    readonly spec: string,
    private readonly opts: DatasetOptions,
  ) {
    this.maxPixels = opts.maxImagePixels ?? DEFAULT_MAX_IMAGE_PIXELS;
    this.source = openSource(spec, {
      opts,
      maxImageBytes: maxEncodedImageBytes(this.maxPixels),
      report: (id, kind, detail) => this.skip(id, kind, detail),
      counts: this.warnings,
    });
  }

  get description(): string {
    return this.source.description;
  }

  state(): DataState {
    return { position: { ...this.pos }, warnings: { ...this.warnings }, warned: [...this.warned] };
  }

  restore(state: DataState): void {
    this.pos = { ...state.position };
    // known counters only (older states lack the newer ones)
    for (const k of Object.keys(this.warnings) as (keyof DataWarnings)[]) this.warnings[k] = state.warnings[k] ?? 0;
    this.warned = new Set(state.warned);
    this.source.reset();
  }

  /** What was skipped so far, e.g. "2 unreadable image(s), 1 bad shard(s)"; empty when nothing was. */
  warningSummary(): string {
    return (Object.keys(WARNING_NAMES) as (keyof DataWarnings)[])
      .filter((k) => this.warnings[k])
      .map((k) => `${this.warnings[k]} ${WARNING_NAMES[k]}`)
      .join(', ');
  }

  private skip(id: string, kind: keyof DataWarnings, detail: string): void {
    if (this.opts.strict) throw strictError(id, detail);
    if (this.warned.has(id)) return;
    this.warned.add(id);
    this.warnings[kind]++;
    const max = this.opts.maxWarningsPrinted ?? 20;
    if (this.printed < max) this.opts.log?.(`warning: skipping ${id}: ${detail}`);
    else if (this.printed === max) this.opts.log?.('warning: further skipped samples are counted but not printed');
    this.printed++;
  }

  /** The next usable sample (skips broken samples with counted warnings, unless strict). */
  next(): Sample {
    for (;;) {
      const epoch = this.pos.epoch;
      const raw = this.source.next(this.pos);
      if (this.pos.epoch !== epoch) {
        if (this.pos.usableInEpoch === 0) {
          throw new DatasetError(
            `dataset ${this.source.description} has nothing usable: a whole pass skipped every sample (${this.warningSummary() || 'no samples'})`,
          );
        }
        this.pos.usableInEpoch = 0;
      }
      const ordinal = this.pos.consumed++;
      const rng = new Generator(deriveSeed(this.opts.seed, 'sample', ordinal));
      if (raw.caption === undefined) {
        this.skip(raw.id, 'missingCaption', 'no caption');
        continue;
      }
      let image: RGBImage;
      try {
        image = decodeImage(raw.load(), this.maxPixels);
      } catch (e) {
        if (e instanceof ImageTooLargeError) this.skip(raw.id, 'oversized', `image too large (${e.message})`);
        else this.skip(raw.id, 'unreadable', `unreadable image (${(e as Error).message})`);
        continue;
      }
      const caption = Array.isArray(raw.caption) ? raw.caption[rng.int(raw.caption.length)] : raw.caption;
      this.pos.usableInEpoch++;
      return { id: raw.id, image, caption, rng };
    }
  }

  close(): void {
    this.source.close();
  }
}
