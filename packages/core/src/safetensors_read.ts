/**
 * Safetensors reader and writer (https://github.com/huggingface/safetensors, format version 1).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{key: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`, then the data section.
 * Offsets are relative to the start of the data section. All data is little-endian.
 *
 * Reading never loads a whole file from disk: the header is parsed once and each tensor is read on demand by offset.
 * Files are found through {@link fileStore}: paths on disk in Node, fetched URL folders in a browser. Writing is
 * Node only (safetensors.ts).
 */
import { NotRegularFileError, RandomAccessFile, fileStore, joinPath, parentPath } from './files';
import { HostData, HostTensor, SafetensorsDtype, numel } from './host_tensor';
import { JsonTextError, parseStrictJson, quoteValue } from './strict_json';

/** Largest accepted JSON header, as in the reference implementation. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

export const METADATA_KEY = '__metadata__';

// Tensors are read and written through typed-array views, which use host byte order.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1)
  throw new Error('safetensors: a little-endian host is required');

/** A malformed or inconsistent safetensors file, index or tensor. Names the file and, where known, the key. */
export class SafetensorsError extends Error {
  readonly file: string;
  readonly key?: string;

  constructor(file: string, detail: string, key?: string) {
    super(key === undefined ? `${file}: ${detail}` : `${file}: tensor ${JSON.stringify(key)}: ${detail}`);
    this.name = 'SafetensorsError';
    this.file = file;
    this.key = key;
  }
}

export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Bytes on disk (numel × dtype size). */
  byteLength: number;
}

/** Random access to named tensors, one file or several shards. */
export interface TensorReader {
  /** Tensor names in file order (shard by shard). */
  keys(): string[];
  info(key: string): TensorInfo;
  /** Reads one tensor from disk; float dtypes come back as Float32Array. */
  get(key: string): HostTensor;
  /** Releases file handles. Idempotent. */
  close(): void;
}

export interface SafetensorsFile extends TensorReader {
  readonly path: string;
  readonly metadata: Record<string, string>;
}

export interface Checkpoint extends TensorReader {
  /** The safetensors files behind this checkpoint, in shard order. */
  readonly files: string[];
}

export interface CheckpointOptions {
  /** File base name inside a directory; default: `diffusion_pytorch_model`, then `model`. */
  base?: string;
  /** Variant such as `fp16` or `bf16`. */
  variant?: string;
}

interface Entry {
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

interface Header {
  entries: Map<string, Entry>;
  metadata: Record<string, string>;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading

/**
 * Opens a safetensors file and validates its header. Call `close()` when done. Symbolic links are followed; anything
 * but a regular file is refused before it is opened (see openRegularFile).
 */
export function openSafetensors(file: string): SafetensorsFile {
  const raw = asSafetensorsError(file, () => fileStore(file).open(file));
  try {
    const { header, dataStart } = readHeader(raw, file);
    return new SafetensorsFileReader(file, raw, header, dataStart);
  } catch (err) {
    raw.close();
    throw err;
  }
}

/** Runs `read`, reporting a missing, unreadable or short file as a SafetensorsError. */
function asSafetensorsError<T>(file: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (err instanceof NotRegularFileError) throw new SafetensorsError(file, err.detail);
    throw err;
  }
}

/** Reads every tensor of one safetensors file. */
export function loadSafetensors(file: string): Map<string, HostTensor> {
  const reader = openSafetensors(file);
  try {
    return new Map(reader.keys().map((key) => [key, reader.get(key)]));
  } finally {
    reader.close();
  }
}

class SafetensorsFileReader implements SafetensorsFile {
  readonly metadata: Record<string, string>;
  private readonly order: string[];
  private raw: RandomAccessFile | undefined;

  constructor(
    readonly path: string,
    raw: RandomAccessFile,
    private readonly header: Header,
    private readonly dataStart: number,
  ) {
    this.raw = raw;
    this.metadata = header.metadata;
    this.order = [...header.entries.keys()].sort((a, b) => this.entry(a).begin - this.entry(b).begin);
  }

  keys(): string[] {
    return [...this.order];
  }

  info(key: string): TensorInfo {
    const { dtype, shape, begin, end } = this.entry(key);
    return { dtype, shape: [...shape], byteLength: end - begin };
  }

  get(key: string): HostTensor {
    const { dtype, shape, begin, end } = this.entry(key);
    const raw = this.raw;
    if (raw === undefined) throw new SafetensorsError(this.path, 'file is closed', key);
    const bytes = new Uint8Array(end - begin);
    asSafetensorsError(this.path, () => raw.read(bytes, this.dataStart + begin));
    return { dtype, shape: [...shape], data: decodeTensor(dtype, bytes, numel(shape)) };
  }

  close(): void {
    this.raw?.close();
    this.raw = undefined;
  }

  private entry(key: string): Entry {
    const entry = this.header.entries.get(key);
    if (entry === undefined) throw new SafetensorsError(this.path, 'no such tensor', key);
    return entry;
  }
}

/** Reads and validates the length prefix and the JSON header. */
function readHeader(raw: RandomAccessFile, file: string): { header: Header; dataStart: number } {
  const fileSize = raw.size;
  if (fileSize < 8)
    throw new SafetensorsError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const prefix = new Uint8Array(8);
  asSafetensorsError(file, () => raw.read(prefix, 0));
  const headerLength = new DataView(prefix.buffer).getBigUint64(0, true);
  // The length itself is not quoted: for a file that is not safetensors it is that file's first 8 bytes.
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(
      file,
      `the header length prefix exceeds the limit of ${MAX_HEADER_BYTES} bytes (not a safetensors file?)`,
    );
  }
  if (headerLength > BigInt(fileSize - 8)) {
    throw new SafetensorsError(file, `the header length prefix runs beyond the end of the file (${fileSize} bytes)`);
  }
  const dataStart = 8 + Number(headerLength);
  const headerBytes = new Uint8Array(dataStart - 8);
  asSafetensorsError(file, () => raw.read(headerBytes, 8));
  return { header: parseHeader(file, headerBytes, fileSize - dataStart), dataStart };
}

/** Decodes the header JSON and checks every entry against the data section. */
function parseHeader(file: string, bytes: Uint8Array, dataLength: number): Header {
  const json = parseJsonObject(file, bytes, 'header');
  const entries = new Map<string, Entry>();
  let metadata: Record<string, string> = {};
  for (const [key, value] of Object.entries(json)) {
    if (key === METADATA_KEY) metadata = parseMetadata(file, value);
    else entries.set(key, parseEntry(file, key, value, dataLength));
  }
  checkCoverage(file, entries, dataLength);
  return { entries, metadata };
}

/** Decodes strict UTF-8 JSON that must be an object; a key given twice is an error. */
function parseJsonObject(file: string, bytes: Uint8Array, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new SafetensorsError(file, `${what} is not valid UTF-8`);
  }
  let value: unknown;
  try {
    value = parseStrictJson(text);
  } catch (err) {
    if (!(err instanceof JsonTextError)) throw err;
    throw new SafetensorsError(file, `${what} is not valid JSON (${err.message})`);
  }
  if (!isPlainObject(value)) throw new SafetensorsError(file, `${what} is not a JSON object`);
  return value;
}

function parseMetadata(file: string, value: unknown): Record<string, string> {
  if (!isPlainObject(value) || !Object.values(value).every((v) => typeof v === 'string')) {
    throw new SafetensorsError(file, `"${METADATA_KEY}" must be an object of strings`);
  }
  return value as Record<string, string>;
}

function parseEntry(file: string, key: string, value: unknown, dataLength: number): Entry {
  const fail = (detail: string): never => {
    throw new SafetensorsError(file, detail, key);
  };
  if (!isPlainObject(value)) return fail('header entry is not an object');
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isDtype(dtype)) return fail(`unknown dtype ${quoteValue(dtype)}`);
  if (!isIndexArray(shape)) return fail(`shape ${quoteValue(shape)} is not an array of non-negative integers`);
  if (!isIndexArray(offsets) || offsets.length !== 2 || offsets[0] > offsets[1]) {
    return fail(`data_offsets ${quoteValue(offsets)} is not [begin, end] with 0 <= begin <= end`);
  }
  const [begin, end] = offsets;
  if (end > dataLength) return fail(`data_offsets end ${end} is beyond the data section (${dataLength} bytes)`);
  const expected = numel(shape) * DTYPE_SIZE[dtype];
  if (end - begin !== expected) {
    return fail(`holds ${end - begin} bytes but shape [${shape.join(', ')}] of ${dtype} needs ${expected}`);
  }
  return { dtype, shape, begin, end };
}

/**
 * The tensors must tile the data section exactly, as the reference implementation requires: sorted by offsets,
 * each begins where the previous one ends, and the last one ends at the end of the file. Bytes no tensor owns
 * would be read by nobody; overlapping tensors would alias each other's data.
 */
function checkCoverage(file: string, entries: Map<string, Entry>, dataLength: number): void {
  const ranges = [...entries].sort(([, a], [, b]) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let previous: string | undefined;
  for (const [key, entry] of ranges) {
    if (entry.begin < covered)
      throw new SafetensorsError(file, `data overlaps tensor ${JSON.stringify(previous)}`, key);
    if (entry.begin > covered) {
      throw new SafetensorsError(
        file,
        `data starts at ${entry.begin}, leaving bytes ${covered}..${entry.begin} of the data section unused`,
        key,
      );
    }
    covered = entry.end;
    previous = key;
  }
  if (covered !== dataLength) {
    throw new SafetensorsError(
      file,
      `the tensors cover ${covered} of the ${dataLength} bytes of the data section (${dataLength - covered} trailing bytes)`,
    );
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, value);
}

export function isIndexArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((v) => Number.isSafeInteger(v) && v >= 0);
}

/** Interprets freshly read, 8-byte-aligned little-endian bytes; floats come back as Float32Array. */
function decodeTensor(dtype: SafetensorsDtype, bytes: Uint8Array, count: number): HostData {
  const { buffer } = bytes;
  switch (dtype) {
    case 'F32':
      return new Float32Array(buffer, 0, count);
    case 'F64':
      return Float32Array.from(new Float64Array(buffer, 0, count));
    case 'F16':
      return halfToFloat32(new Uint16Array(buffer, 0, count));
    case 'BF16':
      return bfloat16ToFloat32(new Uint16Array(buffer, 0, count));
    case 'I64':
      return new BigInt64Array(buffer, 0, count);
    case 'I32':
      return new Int32Array(buffer, 0, count);
    case 'I16':
      return new Int16Array(buffer, 0, count);
    case 'I8':
      return new Int8Array(buffer, 0, count);
    case 'U8':
    case 'BOOL':
      return bytes;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Half precision and bfloat16 conversions (bit exact)

let halfTable: Uint32Array | undefined;

/** float32 bit pattern of every float16 bit pattern, built on first use. */
function halfToFloatBitsTable(): Uint32Array {
  if (halfTable === undefined) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfBitsToFloatBits(h);
  }
  return halfTable;
}

/** Exact float16 → float32 on bit patterns: normals, subnormals (renormalised), ±0, ±inf, NaN payloads. */
function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exponent = (h >>> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  let floatExponent = 113; // 2^-14 = 2^(113-127), the subnormal scale before normalisation
  while ((mantissa & 0x400) === 0) {
    mantissa <<= 1;
    floatExponent--;
  }
  return (sign | (floatExponent << 23) | ((mantissa & 0x3ff) << 13)) >>> 0;
}

function halfToFloat32(half: Uint16Array): Float32Array {
  const table = halfToFloatBitsTable();
  const bits = new Uint32Array(half.length);
  for (let i = 0; i < half.length; i++) bits[i] = table[half[i]];
  return new Float32Array(bits.buffer);
}

/** bfloat16 is the top half of a float32 bit pattern. */
function bfloat16ToFloat32(bf16: Uint16Array): Float32Array {
  const bits = new Uint32Array(bf16.length);
  for (let i = 0; i < bf16.length; i++) bits[i] = bf16[i] << 16;
  return new Float32Array(bits.buffer);
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints: single files, sharded indexes, and diffusers/transformers directory layouts

const DEFAULT_BASES = ['diffusion_pytorch_model', 'model'];

/**
 * Opens a checkpoint given a `.safetensors` file, a `*.safetensors.index.json` shard index, or a directory holding
 * `<base>[.<variant>].safetensors` or its index. All shards are presented as one set of tensors.
 */
export function openCheckpoint(pathOrDir: string, opts: CheckpointOptions = {}): Checkpoint {
  const kind = asSafetensorsError(pathOrDir, () => fileStore(pathOrDir).kind(pathOrDir));
  if (kind === undefined) throw new SafetensorsError(pathOrDir, 'no such file or directory');
  const file =
    kind === 'folder'
      ? locateWeights(pathOrDir, opts.base === undefined ? DEFAULT_BASES : [opts.base], opts.variant)
      : pathOrDir;
  return file.endsWith('.json') ? openShardIndex(file) : mergeShards(file, [openSafetensors(file)]);
}

/** Path of `<base>[.<variant>].safetensors` in `dir`, else of its shard index. */
export function findWeightsFile(dir: string, base: string, variant?: string): string {
  return locateWeights(dir, [base], variant);
}

/** File names tried for one base, best first. The diffusers/transformers variant index is `<base>.safetensors.index.<variant>.json`. */
function weightFileNames(base: string, variant: string | undefined): string[] {
  return variant === undefined
    ? [`${base}.safetensors`, `${base}.safetensors.index.json`]
    : [
        `${base}.${variant}.safetensors`,
        `${base}.safetensors.index.${variant}.json`,
        `${base}.${variant}.safetensors.index.json`,
      ];
}

function locateWeights(dir: string, bases: string[], variant: string | undefined): string {
  // The variant becomes part of a file name; a separator or ".." in it would reach outside the folder.
  if (variant !== undefined && !/^[A-Za-z0-9_-]+$/.test(variant)) {
    throw new SafetensorsError(dir, `variant ${quoteValue(variant)} may only hold letters, digits, "_" and "-"`);
  }
  const tried = bases.flatMap((base) => weightFileNames(base, variant));
  const found = tried.map((name) => joinPath(dir, name)).find(isFile);
  if (found === undefined) throw new SafetensorsError(dir, `no weights file found (tried ${tried.join(', ')})`);
  return found;
}

function isFile(file: string): boolean {
  return fileStore(file).kind(file) === 'file';
}

/**
 * Why `name`, read from an index or pointer file, is not a plain relative path inside the folder holding that file,
 * or undefined when it is. Only the name is checked, not where a symbolic link at that name leads: the Hugging Face
 * cache links every file of a snapshot folder to a shared blob store.
 */
export function unsafeRelativeName(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name.includes('\0')) return 'contains a NUL character';
  if (/^([\\/]|[A-Za-z]:[\\/])/.test(name)) return 'is an absolute path';
  if (name.split(/[\\/]/).some((part) => part === '..')) return 'leads out of the folder ("..")';
  return undefined;
}

/** Opens every shard named by an index and checks that each key lives in the shard the index names. */
function openShardIndex(indexFile: string): Checkpoint {
  const weightMap = readWeightMap(indexFile);
  for (const [key, name] of weightMap) {
    const why = unsafeRelativeName(name);
    if (why !== undefined)
      throw new SafetensorsError(
        indexFile,
        `shard name ${quoteValue(name)} ${why}; an index may only name files in its own folder`,
        key,
      );
  }
  const shardNames = [...new Set(weightMap.values())];
  const shardPaths = shardNames.map((name) => joinPath(parentPath(indexFile), name));
  shardPaths.forEach((shardPath, i) => {
    if (fileStore(shardPath).kind(shardPath) === undefined)
      throw new SafetensorsError(indexFile, `shard "${shardNames[i]}" is missing (${shardPath})`);
  });
  const shards: SafetensorsFile[] = [];
  try {
    for (const shardPath of shardPaths) shards.push(openSafetensors(shardPath));
    const checkpoint = mergeShards(indexFile, shards);
    const shardKeys = new Map(shardNames.map((name, i) => [name, new Set(shards[i].keys())]));
    for (const [key, name] of weightMap) {
      if (!shardKeys.get(name)?.has(key)) {
        throw new SafetensorsError(indexFile, `not found in shard "${name}" named by the index`, key);
      }
    }
    return checkpoint;
  } catch (err) {
    shards.forEach((shard) => shard.close());
    throw err;
  }
}

/** Parses `{"metadata": {...}, "weight_map": {key: shardFileName}}`. */
function readWeightMap(indexFile: string): Map<string, string> {
  const bytes = asSafetensorsError(indexFile, () => fileStore(indexFile).read(indexFile));
  const index = parseJsonObject(indexFile, bytes, 'shard index');
  const weightMap = index.weight_map;
  if (!isPlainObject(weightMap) || !Object.values(weightMap).every((v) => typeof v === 'string')) {
    throw new SafetensorsError(indexFile, '"weight_map" must be an object mapping tensor names to shard file names');
  }
  return new Map(Object.entries(weightMap as Record<string, string>));
}

/** One reader over several files; a key stored in two files is an error. */
function mergeShards(source: string, shards: SafetensorsFile[]): Checkpoint {
  const owners = new Map<string, SafetensorsFile>();
  for (const shard of shards) {
    for (const key of shard.keys()) {
      const other = owners.get(key);
      if (other !== undefined)
        throw new SafetensorsError(source, `stored in both ${other.path} and ${shard.path}`, key);
      owners.set(key, shard);
    }
  }
  const owner = (key: string): SafetensorsFile => {
    const shard = owners.get(key);
    if (shard === undefined) throw new SafetensorsError(source, 'no such tensor', key);
    return shard;
  };
  return {
    files: shards.map((shard) => shard.path),
    keys: () => [...owners.keys()],
    info: (key) => owner(key).info(key),
    get: (key) => owner(key).get(key),
    close: () => shards.forEach((shard) => shard.close()),
  };
}
