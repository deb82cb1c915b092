/**
 * A streaming reader for POSIX ustar / GNU / pax tar archives (WebDataset shards).
 *
 * The archive is never loaded whole: headers are read one 512-byte block at a time with
 * positional reads, and an entry's data is read only when asked for (entries that are not
 * needed are skipped by offset). Supports GNU long names (`L`), pax extended headers (`x`, the
 * `path` and `size` records) and base-256 sizes.
 */
import * as fs from 'fs';

export interface TarEntry {
  /** Path inside the archive. */
  name: string;
  /** Data size in bytes. */
  size: number;
  /** Byte offset of the data in the archive. */
  offset: number;
  /** '0' regular file, '5' directory, … */
  type: string;
}

const BLOCK = 512;

function cstring(buf: Buffer, start: number, length: number): string {
  const end = buf.indexOf(0, start);
  return buf.toString('utf8', start, end >= 0 && end < start + length ? end : start + length);
}

/** A numeric header field: NUL/space-terminated octal, or GNU base-256; NaN when it is neither. */
function parseNumber(buf: Buffer, start: number, length: number): number {
  if (buf[start] & 0x80) {
    // base-256 (GNU): big-endian with the top bit as a flag; the next bit set means negative
    if (buf[start] & 0x40) return NaN;
    let v = buf[start] & 0x3f;
    for (let i = start + 1; i < start + length; i++) v = v * 256 + buf[i];
    return Number.isSafeInteger(v) ? v : NaN;
  }
  const s = cstring(buf, start, length).trim();
  if (!s) return 0;
  return /^[0-7]+$/.test(s) ? parseInt(s, 8) : NaN;
}

function checksumOk(header: Buffer): boolean {
  const stored = parseNumber(header, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
  return sum === stored;
}

export class TarError extends Error {
  constructor(
    readonly file: string,
    readonly detail: string,
  ) {
    super(`${file}: ${detail}`);
    this.name = 'TarError';
  }
}

/** GNU long-name and pax records are short texts; anything larger is not a real archive. */
const MAX_META_BYTES = 1 << 20;
/** Entry names longer than this (or with control characters) are garbage, not file names. */
const MAX_NAME_LENGTH = 4096;

/** Sequential access to one tar file. */
export class TarReader {
  private fd: number | undefined;
  readonly size: number;

  constructor(readonly file: string) {
    // O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-file
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      throw new TarError(file, `cannot be opened (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const st = fs.fstatSync(fd);
    if (!st.isFile()) {
      fs.closeSync(fd);
      throw new TarError(file, 'is not a regular file');
    }
    this.fd = fd;
    this.size = st.size;
  }

  /**
   * Entries in archive order (regular files only unless `all`). Reads headers lazily. Sizes, names
   * and checksums are validated; a header that fails is a TarError naming the byte offset.
   */
  *entries(all = false): Generator<TarEntry> {
    let pos = 0;
    let longName: string | undefined;
    let paxPath: string | undefined;
    let paxSize: number | undefined;
    const header = Buffer.alloc(BLOCK);
    while (pos < this.size) {
      if (pos + BLOCK > this.size) {
        const rest = Buffer.alloc(this.size - pos);
        this.readAt(rest, pos);
        if (rest.every((b) => b === 0)) return;
        throw new TarError(this.file, `truncated header at byte ${pos}`);
      }
      this.readAt(header, pos);
      if (header.every((b) => b === 0)) return; // end-of-archive marker
      if (!checksumOk(header))
        throw new TarError(this.file, `bad header checksum at byte ${pos} (not a tar file, or corrupt)`);
      const type = String.fromCharCode(header[156] || 0x30);
      let size = parseNumber(header, 124, 12);
      if (Number.isNaN(size)) throw new TarError(this.file, `entry at byte ${pos}: the size field is not a number`);
      const dataOffset = pos + BLOCK;
      if (dataOffset + size > this.size)
        throw new TarError(
          this.file,
          `entry at byte ${pos} declares ${size} bytes, past the end of the file (truncated shard)`,
        );
      if (type === 'L' || type === 'x' || type === 'g') {
        if (size > MAX_META_BYTES)
          throw new TarError(
            this.file,
            `${type === 'L' ? 'long-name' : 'pax'} record at byte ${pos} is ${size} bytes (limit ${MAX_META_BYTES})`,
          );
        const data = this.read({ name: '', size, offset: dataOffset, type });
        if (type === 'L') longName = cstring(data, 0, data.length);
        else if (type === 'x') {
          const rec = parsePax(data);
          if (rec.path !== undefined) paxPath = rec.path;
          if (rec.size !== undefined) {
            paxSize = /^\d{1,15}$/.test(rec.size) ? Number(rec.size) : NaN;
            if (Number.isNaN(paxSize))
              throw new TarError(
                this.file,
                `pax record at byte ${pos}: size ${JSON.stringify(rec.size.slice(0, 40))} is not a number`,
              );
          }
        }
        pos = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
        continue;
      }
      if (paxSize !== undefined) size = paxSize;
      let name = cstring(header, 0, 100);
      const magic = header.toString('latin1', 257, 262);
      if (magic === 'ustar') {
        const prefix = cstring(header, 345, 155);
        if (prefix) name = `${prefix}/${name}`;
      }
      if (longName !== undefined) name = longName;
      if (paxPath !== undefined) name = paxPath;
      longName = paxPath = undefined;
      paxSize = undefined;
      if (!name || name.length > MAX_NAME_LENGTH || /[\x00-\x1f\x7f]/.test(name)) {
        throw new TarError(this.file, `entry at byte ${pos} has an invalid name ${JSON.stringify(name.slice(0, 60))}`);
      }
      if (dataOffset + size > this.size)
        throw new TarError(this.file, `entry ${name} runs past the end of the file (truncated shard)`);
      if (all || type === '0' || type === '\0' || type === '7') yield { name, size, offset: dataOffset, type };
      pos = dataOffset + Math.ceil(size / BLOCK) * BLOCK;
    }
  }

  /** The data of one entry. */
  read(entry: TarEntry): Buffer {
    const buf = Buffer.alloc(entry.size);
    this.readAt(buf, entry.offset);
    return buf;
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private readAt(buf: Buffer, position: number): void {
    if (this.fd === undefined) throw new TarError(this.file, 'reader is closed');
    let done = 0;
    while (done < buf.length) {
      const n = fs.readSync(this.fd, buf, done, buf.length - done, position + done);
      if (n === 0) throw new TarError(this.file, `unexpected end of file at byte ${position + done}`);
      done += n;
    }
  }
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space < 0) break;
    const len = parseInt(data.toString('utf8', pos, space), 10);
    if (!Number.isFinite(len) || len <= 0) break;
    const rec = data.toString('utf8', space + 1, pos + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out[rec.slice(0, eq)] = rec.slice(eq + 1);
    pos += len;
  }
  return out;
}

/** WebDataset grouping: `dir/key.ext1.ext2` → key `dir/key`, extension `ext1.ext2` (lower-cased). */
export function splitWdsName(name: string): { key: string; ext: string } {
  const slash = name.lastIndexOf('/');
  const base = name.slice(slash + 1);
  const dot = base.indexOf('.');
  if (dot < 0) return { key: name, ext: '' };
  return { key: name.slice(0, slash + 1) + base.slice(0, dot), ext: base.slice(dot + 1).toLowerCase() };
}

export interface WdsRawSample {
  key: string;
  /** extension → data, only for the wanted extensions. */
  files: Map<string, Buffer>;
  /** extension → size, for wanted entries larger than their limit (not read). */
  oversized: Map<string, number>;
}

/**
 * WebDataset samples of one shard: consecutive entries sharing a key form a sample. Only the
 * entries whose extension is in `wanted` are read, and only up to `maxBytes(ext)` bytes each (larger
 * ones are listed in `oversized`); the rest are skipped by offset.
 */
export function* wdsSamples(
  reader: TarReader,
  wanted: Set<string>,
  maxBytes: (ext: string) => number = () => Infinity,
): Generator<WdsRawSample> {
  let current: WdsRawSample | undefined;
  for (const entry of reader.entries()) {
    const { key, ext } = splitWdsName(entry.name);
    if (key.split('/').pop()!.startsWith('__')) continue; // e.g. __index__ files
    if (!current || current.key !== key) {
      if (current) yield current;
      current = { key, files: new Map(), oversized: new Map() };
    }
    if (!wanted.has(ext)) continue;
    if (entry.size > maxBytes(ext)) current.oversized.set(ext, entry.size);
    else current.files.set(ext, reader.read(entry));
  }
  if (current) yield current;
}

/** Write a tar archive (ustar) from name → data; used by tests and tools. */
export function writeTar(file: string, entries: [string, Buffer][]): void {
  const chunks: Buffer[] = [];
  for (const [name, data] of entries) {
    const h = Buffer.alloc(BLOCK);
    if (Buffer.byteLength(name) > 100) {
      const longData = Buffer.from(name + '\0');
      chunks.push(
        makeHeader('././@LongLink', longData.length, 'L'),
        longData,
        Buffer.alloc((BLOCK - (longData.length % BLOCK)) % BLOCK),
      );
      h.set(makeHeader(name.slice(0, 99), data.length, '0'));
    } else h.set(makeHeader(name, data.length, '0'));
    chunks.push(h, data, Buffer.alloc((BLOCK - (data.length % BLOCK)) % BLOCK));
  }
  chunks.push(Buffer.alloc(BLOCK * 2));
  fs.writeFileSync(file, Buffer.concat(chunks));
}

function makeHeader(name: string, size: number, type: string): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  h.write('00000000000\0', 136, 'latin1');
  h.write('        ', 148, 'latin1');
  h.write(type, 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += h[i];
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}
