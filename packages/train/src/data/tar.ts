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

function parseOctal(buf: Buffer, start: number, length: number): number {
  if (buf[start] & 0x80) {
    // base-256 (GNU): big-endian two's complement with the top bit as a flag
    let v = 0;
    for (let i = start + 1; i < start + length; i++) v = v * 256 + buf[i];
    return v;
  }
  const s = cstring(buf, start, length).trim();
  return s ? parseInt(s, 8) : 0;
}

function checksumOk(header: Buffer): boolean {
  const stored = parseOctal(header, 148, 8);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : header[i];
  return sum === stored;
}

export class TarError extends Error {
  constructor(readonly file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.name = 'TarError';
  }
}

/** Sequential access to one tar file. */
export class TarReader {
  private fd: number | undefined;
  readonly size: number;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'r');
    this.size = fs.fstatSync(this.fd).size;
  }

  /** Entries in archive order (regular files only unless `all`). Reads headers lazily. */
  *entries(all = false): Generator<TarEntry> {
    let pos = 0;
    let longName: string | undefined;
    let paxPath: string | undefined;
    let paxSize: number | undefined;
    const header = Buffer.alloc(BLOCK);
    while (pos + BLOCK <= this.size) {
      this.readAt(header, pos);
      if (header.every((b) => b === 0)) return; // end-of-archive marker
      if (!checksumOk(header)) throw new TarError(this.file, `bad header checksum at byte ${pos} (not a tar file, or corrupt)`);
      const type = String.fromCharCode(header[156] || 0x30);
      let size = parseOctal(header, 124, 12);
      const dataOffset = pos + BLOCK;
      if (type === 'L' || type === 'x' || type === 'g') {
        const data = this.read({ name: '', size, offset: dataOffset, type });
        if (type === 'L') longName = cstring(data, 0, data.length);
        else if (type === 'x') {
          const rec = parsePax(data);
          if (rec.path !== undefined) paxPath = rec.path;
          if (rec.size !== undefined) paxSize = Number(rec.size);
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
      if (dataOffset + size > this.size) throw new TarError(this.file, `entry ${name} runs past the end of the file (truncated shard)`);
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
}

/**
 * WebDataset samples of one shard: consecutive entries sharing a key form a sample. Only the
 * entries whose extension is in `wanted` are read; the rest are skipped by offset.
 */
export function* wdsSamples(reader: TarReader, wanted: Set<string>): Generator<WdsRawSample> {
  let current: WdsRawSample | undefined;
  for (const entry of reader.entries()) {
    const { key, ext } = splitWdsName(entry.name);
    if (key.split('/').pop()!.startsWith('__')) continue; // e.g. __index__ files
    if (!current || current.key !== key) {
      if (current) yield current;
      current = { key, files: new Map() };
    }
    if (wanted.has(ext)) current.files.set(ext, reader.read(entry));
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
      chunks.push(makeHeader('././@LongLink', longData.length, 'L'), longData, Buffer.alloc((BLOCK - (longData.length % BLOCK)) % BLOCK));
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
