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
 * re-read up to the saved sample without decoding images). An unreadable image or a missing
 * caption is skipped with a counted warning; a source with nothing usable is an error naming it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Generator } from 'wuerstchen';
import { deriveSeed } from '../rng';
import { RGBImage, decodeImage } from './image';
import { TarReader, WdsRawSample, wdsSamples } from './tar';

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
}

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
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
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
  constructor(readonly description: string, private readonly items: RawSample[], private readonly seed: number) {}
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
  static readonly WANTED = new Set([...IMAGE_EXTENSIONS, 'txt', 'json']);

  constructor(readonly description: string, private readonly shards: string[], private readonly seed: number, private readonly bufferSize: number) {}

  private order(epoch: number): number[] {
    if (this.orderEpoch !== epoch) {
      this.shardOrder = new Generator(deriveSeed(this.seed, 'shards', epoch)).permutation(this.shards.length);
      this.orderEpoch = epoch;
    }
    return this.shardOrder!;
  }

  private open(pos: DataPosition): void {
    this.closeShard();
    const file = this.shards[this.order(pos.epoch)[pos.index]];
    this.reader = new TarReader(file);
    this.stream = wdsSamples(this.reader, WdsSource.WANTED);
    this.buffer = [];
    this.streamDone = false;
    this.bufRng = new Generator(deriveSeed(this.seed, 'buffer', pos.epoch, pos.index));
    this.openShard = pos.index;
    this.openEpoch = pos.epoch;
    // replay the buffer up to the saved position, without decoding anything
    for (let i = 0; i < pos.emitted; i++) if (!this.pick()) break;
  }

  private fill(): void {
    while (!this.streamDone && this.buffer.length < this.bufferSize) {
      const r = this.stream!.next();
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
      if (!this.reader || this.openShard !== pos.index || this.openEpoch !== pos.epoch) this.open(pos);
      const s = this.pick();
      if (s) {
        pos.emitted++;
        const file = this.shards[this.order(pos.epoch)[pos.index]];
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
          id: `${file}:${s.key}`,
          caption,
          load: () => {
            if (!imageExt) throw new Error(`no image entry (.${IMAGE_EXTENSIONS.join('/.')})`);
            return s.files.get(imageExt)!;
          },
        };
      }
      this.closeShard();
      pos.index++;
      pos.emitted = 0;
    }
    throw new DatasetError(`${this.description}: the shards contain no samples`);
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

/** Expand `a-{000..009}.tar` and `{a,b}` brace patterns. */
export function expandBraces(pattern: string): string[] {
  const m = /\{([^{}]*)\}/.exec(pattern);
  if (!m) return [pattern];
  const [whole, body] = m;
  const pre = pattern.slice(0, m.index);
  const post = pattern.slice(m.index + whole.length);
  let alts: string[];
  const range = /^(\d+)\.\.(\d+)$/.exec(body);
  if (range) {
    const [, a, b] = range;
    const width = a.length;
    alts = [];
    for (let i = parseInt(a, 10); i <= parseInt(b, 10); i++) alts.push(String(i).padStart(width, '0'));
  } else alts = body.split(',');
  return alts.flatMap((alt) => expandBraces(pre + alt + post));
}

export interface DatasetOptions {
  seed: number;
  /** WebDataset shuffle buffer (samples); default 44 as in dome272's loader. */
  shuffleBuffer?: number;
  /** Print at most this many individual warnings (default 20); all are counted. */
  maxWarningsPrinted?: number;
  log?: (line: string) => void;
}

/** Detect the source kind and build it. */
function openSource(spec: string, opts: DatasetOptions): RawSource {
  const specs = spec.includes(',') ? spec.split(',').map((s) => s.trim()).filter(Boolean) : [spec];
  const isTarSpec = (s: string) => s.endsWith('.tar') || /\{.*\}/.test(s);
  if (specs.length > 1 || isTarSpec(spec)) {
    const shards = specs.flatMap(expandBraces);
    const missing = shards.filter((s) => !fs.existsSync(s));
    if (missing.length) throw new DatasetError(`WebDataset ${spec}: missing shard(s): ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
    return new WdsSource(`WebDataset ${spec}`, shards, opts.seed, opts.shuffleBuffer ?? 44);
  }
  if (!fs.existsSync(spec)) throw new DatasetError(`dataset ${spec} does not exist`);
  const stat = fs.statSync(spec);
  if (stat.isFile() && /\.jsonl?$/i.test(spec)) return openJsonl(spec, opts);
  if (!stat.isDirectory()) throw new DatasetError(`dataset ${spec}: expected a folder, a .jsonl manifest or .tar shards`);
  const tars = fs.readdirSync(spec).filter((f) => f.endsWith('.tar')).sort();
  const images = listImagesRecursive(spec);
  if (tars.length && !images.length) {
    return new WdsSource(`WebDataset ${spec}`, tars.map((t) => path.join(spec, t)), opts.seed, opts.shuffleBuffer ?? 44);
  }
  const items: RawSample[] = [];
  let missingCaption = 0;
  for (const img of images) {
    const txt = img.slice(0, img.length - path.extname(img).length) + '.txt';
    const caption = readCaptionFile(txt);
    if (caption === undefined) {
      missingCaption++;
      continue;
    }
    items.push({ id: img, caption, load: () => fs.readFileSync(img) });
  }
  if (missingCaption) opts.log?.(`warning: ${spec}: ${missingCaption} image(s) without a same-named .txt caption were skipped`);
  if (!items.length) {
    throw new DatasetError(`dataset ${spec} has nothing usable: ${images.length} image(s), ${missingCaption} without a caption (.png/.jpg/.jpeg with same-named .txt expected)`);
  }
  const src = new ListSource(`folder ${spec}`, items, opts.seed);
  (src as unknown as { missingCaption: number }).missingCaption = missingCaption;
  return src;
}

function openJsonl(file: string, opts: DatasetOptions): RawSource {
  const dir = path.dirname(file);
  const lines = fs.readFileSync(file, 'utf8').split(/\r?\n/);
  const items: RawSample[] = [];
  let missingCaption = 0;
  let bad = 0;
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
    } catch {
      bad++;
      opts.log?.(`warning: ${file}:${i + 1}: not valid JSON, skipped`);
      return;
    }
    const img = rec.file_name ?? rec.image ?? rec.path ?? rec.file;
    const cap = rec.text ?? rec.caption ?? rec.prompt;
    if (typeof img !== 'string') {
      bad++;
      opts.log?.(`warning: ${file}:${i + 1}: no "file_name"/"image" field, skipped`);
      return;
    }
    if (!isCaption(cap)) {
      missingCaption++;
      return;
    }
    const p = path.isAbsolute(img) ? img : path.join(dir, img);
    items.push({ id: `${file}:${i + 1}`, caption: cap, load: () => fs.readFileSync(p) });
  });
  if (missingCaption) opts.log?.(`warning: ${file}: ${missingCaption} record(s) without a caption were skipped`);
  if (!items.length) throw new DatasetError(`dataset ${file} has nothing usable: ${items.length + missingCaption + bad} record(s), ${missingCaption} without a caption, ${bad} malformed`);
  const src = new ListSource(`JSONL ${file}`, items, opts.seed);
  (src as unknown as { missingCaption: number }).missingCaption = missingCaption + bad;
  return src;
}

/** The sample stream the trainers read; its {@link DataState} goes into every checkpoint. */
export class ImageTextDataset {
  private readonly source: RawSource;
  private pos: DataPosition = { epoch: 0, index: 0, emitted: 0, consumed: 0, usableInEpoch: 0 };
  readonly warnings: DataWarnings = { unreadable: 0, missingCaption: 0 };
  private warned = new Set<string>();
  private printed = 0;

  constructor(readonly spec: string, private readonly opts: DatasetOptions) {
    this.source = openSource(spec, opts);
    this.warnings.missingCaption = (this.source as unknown as { missingCaption?: number }).missingCaption ?? 0;
  }

  get description(): string {
    return this.source.description;
  }

  state(): DataState {
    return { position: { ...this.pos }, warnings: { ...this.warnings }, warned: [...this.warned] };
  }

  restore(state: DataState): void {
    this.pos = { ...state.position };
    Object.assign(this.warnings, state.warnings);
    this.warned = new Set(state.warned);
    this.source.reset();
  }

  private warn(id: string, kind: keyof DataWarnings, detail: string): void {
    if (this.warned.has(id)) return;
    this.warned.add(id);
    this.warnings[kind]++;
    const max = this.opts.maxWarningsPrinted ?? 20;
    if (this.printed < max) this.opts.log?.(`warning: skipping ${id}: ${detail}`);
    else if (this.printed === max) this.opts.log?.('warning: further skipped samples are counted but not printed');
    this.printed++;
  }

  /** The next usable sample (skips unreadable images / missing captions with counted warnings). */
  next(): Sample {
    for (;;) {
      const epoch = this.pos.epoch;
      const raw = this.source.next(this.pos);
      if (this.pos.epoch !== epoch) {
        if (this.pos.usableInEpoch === 0) {
          throw new DatasetError(
            `dataset ${this.source.description} has nothing usable: a whole pass skipped every sample (${this.warnings.unreadable} unreadable image(s), ${this.warnings.missingCaption} without a caption)`,
          );
        }
        this.pos.usableInEpoch = 0;
      }
      const ordinal = this.pos.consumed++;
      const rng = new Generator(deriveSeed(this.opts.seed, 'sample', ordinal));
      if (raw.caption === undefined) {
        this.warn(raw.id, 'missingCaption', 'no caption');
        continue;
      }
      let image: RGBImage;
      try {
        image = decodeImage(raw.load());
      } catch (e) {
        this.warn(raw.id, 'unreadable', `unreadable image (${(e as Error).message})`);
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
