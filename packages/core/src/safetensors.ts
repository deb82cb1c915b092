/**
 * Safetensors reader and writer (https://github.com/huggingface/safetensors, format version 1).
 *
 * Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
 * `{key: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {string: string}}`, then the data section.
 * Offsets are relative to the start of the data section. All data is little-endian.
 *
 * Reading never loads a whole file: the header is parsed once and each tensor is read on demand by offset.
 * Writing streams tensor data in chunks to a temporary file that is renamed over the target when complete.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { HostData, HostTensor, SafetensorsDtype, numel } from './host_tensor';
import { NotRegularFileError, openRegularFile, readRegularFile } from './regular_file';
import { JsonTextError, parseStrictJson, quoteValue } from './strict_json';

/** Largest accepted JSON header, as in the reference implementation. */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

/** Bytes per element of each dtype. */
export const DTYPE_SIZE: Readonly<Record<SafetensorsDtype, number>> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Largest single read or write handed to fs (keeps well below the 2 GiB per-call limit). */
const IO_CHUNK_BYTES = 64 * 1024 * 1024;
/** Elements converted per chunk when writing F16/BF16/F64 from another array type. */
const CONVERT_CHUNK_ELEMENTS = 4 * 1024 * 1024;
const METADATA_KEY = '__metadata__';

// Tensors are read and written through typed-array views, which use host byte order.
if (os.endianness() !== 'LE') throw new Error('safetensors: a little-endian host is required');

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
  let fd: number;
  try {
    fd = openRegularFile(file);
  } catch (err) {
    if (err instanceof NotRegularFileError) throw new SafetensorsError(file, err.detail);
    throw err;
  }
  try {
    const { header, dataStart } = readHeader(fd, file, fs.fstatSync(fd).size);
    return new SafetensorsFileReader(file, fd, header, dataStart);
  } catch (err) {
    fs.closeSync(fd);
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
  private fd: number | undefined;

  constructor(readonly path: string, fd: number, private readonly header: Header, private readonly dataStart: number) {
    this.fd = fd;
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
    if (this.fd === undefined) throw new SafetensorsError(this.path, 'file is closed', key);
    const bytes = new Uint8Array(end - begin);
    readFully(this.fd, this.path, bytes, this.dataStart + begin);
    return { dtype, shape: [...shape], data: decodeTensor(dtype, bytes, numel(shape)) };
  }

  close(): void {
    if (this.fd === undefined) return;
    fs.closeSync(this.fd);
    this.fd = undefined;
  }

  private entry(key: string): Entry {
    const entry = this.header.entries.get(key);
    if (entry === undefined) throw new SafetensorsError(this.path, 'no such tensor', key);
    return entry;
  }
}

/** Reads and validates the length prefix and the JSON header. */
function readHeader(fd: number, file: string, fileSize: number): { header: Header; dataStart: number } {
  if (fileSize < 8) throw new SafetensorsError(file, `file is ${fileSize} bytes, shorter than the 8-byte header length`);
  const prefix = Buffer.alloc(8);
  readFully(fd, file, prefix, 0);
  const headerLength = prefix.readBigUInt64LE(0);
  // The length itself is not quoted: for a file that is not safetensors it is that file's first 8 bytes.
  if (headerLength > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(file, `the header length prefix exceeds the limit of ${MAX_HEADER_BYTES} bytes (not a safetensors file?)`);
  }
  if (headerLength > BigInt(fileSize - 8)) {
    throw new SafetensorsError(file, `the header length prefix runs beyond the end of the file (${fileSize} bytes)`);
  }
  const dataStart = 8 + Number(headerLength);
  const headerBytes = new Uint8Array(dataStart - 8);
  readFully(fd, file, headerBytes, 8);
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
    if (entry.begin < covered) throw new SafetensorsError(file, `data overlaps tensor ${JSON.stringify(previous)}`, key);
    if (entry.begin > covered) {
      throw new SafetensorsError(file, `data starts at ${entry.begin}, leaving bytes ${covered}..${entry.begin} of the data section unused`, key);
    }
    covered = entry.end;
    previous = key;
  }
  if (covered !== dataLength) {
    throw new SafetensorsError(file, `the tensors cover ${covered} of the ${dataLength} bytes of the data section (${dataLength - covered} trailing bytes)`);
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function isDtype(value: unknown): value is SafetensorsDtype {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_SIZE, value);
}

function isIndexArray(value: unknown): value is number[] {
  return Array.isArray(value) && value.every((v) => Number.isSafeInteger(v) && v >= 0);
}

/** Fills `target` from `position`; a short file is an error, not a hang. */
function readFully(fd: number, file: string, target: Uint8Array, position: number): void {
  let done = 0;
  while (done < target.length) {
    const length = Math.min(target.length - done, IO_CHUNK_BYTES);
    const n = fs.readSync(fd, target, done, length, position + done);
    if (n === 0) throw new SafetensorsError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** Interprets freshly read, 8-byte-aligned little-endian bytes; floats come back as Float32Array. */
function decodeTensor(dtype: SafetensorsDtype, bytes: Uint8Array, count: number): HostData {
  const { buffer } = bytes;
  switch (dtype) {
    case 'F32': return new Float32Array(buffer, 0, count);
    case 'F64': return Float32Array.from(new Float64Array(buffer, 0, count));
    case 'F16': return halfToFloat32(new Uint16Array(buffer, 0, count));
    case 'BF16': return bfloat16ToFloat32(new Uint16Array(buffer, 0, count));
    case 'I64': return new BigInt64Array(buffer, 0, count);
    case 'I32': return new Int32Array(buffer, 0, count);
    case 'I16': return new Int16Array(buffer, 0, count);
    case 'I8': return new Int8Array(buffer, 0, count);
    case 'U8':
    case 'BOOL': return bytes;
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

/** float32 bits → float16 bits, round to nearest even; overflow → ±inf, NaN → quiet NaN 0x7e00 with sign. */
function floatBitsToHalfBits(f: number): number {
  const sign = (f >>> 16) & 0x8000;
  const exponent = (f >>> 23) & 0xff;
  const mantissa = f & 0x7fffff;
  if (exponent === 0xff) return sign | (mantissa === 0 ? 0x7c00 : 0x7e00);
  const halfExponent = exponent - 112;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) return sign | roundShift(mantissa | 0x800000, 14 - halfExponent);
  // Normal: a rounding carry may ripple into the exponent, up to infinity, which is the correct result.
  return sign | ((halfExponent << 10) + roundShift(mantissa, 13));
}

/** `value / 2^shift` rounded to nearest, ties to even (value < 2^24). */
function roundShift(value: number, shift: number): number {
  if (shift > 24) return 0;
  const quotient = value >>> shift;
  const remainder = value - quotient * 2 ** shift;
  const half = 2 ** (shift - 1);
  return remainder > half || (remainder === half && (quotient & 1) === 1) ? quotient + 1 : quotient;
}

/** float32 bits → bfloat16 bits, round to nearest even; NaN stays a quiet NaN with its sign. */
function floatBitsToBfloat16Bits(f: number): number {
  if ((f & 0x7fffffff) > 0x7f800000) return (f >>> 16) | 0x0040;
  return (f + 0x7fff + ((f >>> 16) & 1)) >>> 16;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing

interface Planned {
  key: string;
  tensor: HostTensor;
  begin: number;
  end: number;
}

/** Typed array class names accepted as the data of each dtype when writing. */
const WRITE_ARRAY_TYPES: Readonly<Record<SafetensorsDtype, readonly string[]>> = {
  F64: ['Float64Array', 'Float32Array'],
  F32: ['Float32Array'],
  F16: ['Float32Array'],
  BF16: ['Float32Array'],
  I64: ['BigInt64Array'],
  I32: ['Int32Array'],
  I16: ['Int16Array'],
  I8: ['Int8Array'],
  U8: ['Uint8Array'],
  BOOL: ['Uint8Array'],
};

/**
 * Writes tensors as a safetensors file: keys sorted, data contiguous in key order, header padded with spaces to a
 * multiple of 8 bytes. Each tensor is stored in its `dtype` (F16/BF16 rounded to nearest even from float32 data).
 * The file appears atomically: data goes to a fsynced temporary file that is then renamed over `file`.
 */
export function writeSafetensors(
  file: string,
  tensors: Record<string, HostTensor> | Map<string, HostTensor>,
  metadata: Record<string, string> = { format: 'pt' },
): void {
  const plan = planLayout(file, tensors instanceof Map ? [...tensors] : Object.entries(tensors));
  const header = encodeHeader(file, plan, metadata);
  const temp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`;
  let fd: number | undefined = fs.openSync(temp, 'wx');
  try {
    writeFully(fd, header);
    for (const { tensor } of plan) {
      for (const chunk of tensorChunks(tensor)) writeFully(fd, chunk);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(temp, file);
  } catch (err) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(temp, { force: true });
    throw err;
  }
}

/** Validates the tensors and assigns contiguous byte ranges in sorted key order. */
function planLayout(file: string, tensors: [string, HostTensor][]): Planned[] {
  const sorted = [...tensors].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  let offset = 0;
  return sorted.map(([key, tensor]) => {
    checkWritable(file, key, tensor);
    const begin = offset;
    offset += numel(tensor.shape) * DTYPE_SIZE[tensor.dtype];
    return { key, tensor, begin, end: offset };
  });
}

function checkWritable(file: string, key: string, { dtype, shape, data }: HostTensor): void {
  const fail = (detail: string): never => {
    throw new SafetensorsError(file, detail, key);
  };
  if (key === METADATA_KEY) fail(`"${METADATA_KEY}" is reserved`);
  if (!isDtype(dtype)) fail(`unknown dtype ${JSON.stringify(dtype)}`);
  if (!isIndexArray(shape)) fail(`shape ${JSON.stringify(shape)} is not an array of non-negative integers`);
  const arrayType = arrayTypeName(data);
  if (!ArrayBuffer.isView(data) || !WRITE_ARRAY_TYPES[dtype].includes(arrayType)) {
    fail(`${dtype} data must be a ${WRITE_ARRAY_TYPES[dtype].join(' or ')}, got ${arrayType}`);
  }
  if (data.length !== numel(shape)) fail(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${numel(shape)}`);
}

/** Class name of a typed array, robust across realms (Node Buffers in jest are from another realm). */
function arrayTypeName(data: unknown): string {
  return Object.prototype.toString.call(data).slice(8, -1);
}

/** Length prefix + JSON header padded with spaces to a multiple of 8 bytes; keys are written in plan order. */
function encodeHeader(file: string, plan: Planned[], metadata: Record<string, string>): Buffer {
  if (!Object.values(metadata).every((v) => typeof v === 'string')) {
    throw new SafetensorsError(file, `"${METADATA_KEY}" must be an object of strings`);
  }
  // Built by hand: a JS object would move integer-like keys ahead of the others.
  const fields = plan.map(({ key, tensor, begin, end }) =>
    `${JSON.stringify(key)}:{"dtype":"${tensor.dtype}","shape":${JSON.stringify(tensor.shape)},"data_offsets":[${begin},${end}]}`);
  const json = Buffer.from(`{${[`"${METADATA_KEY}":${JSON.stringify(metadata)}`, ...fields].join(',')}}`, 'utf8');
  const paddedLength = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + paddedLength, 0x20);
  out.writeBigUInt64LE(BigInt(paddedLength), 0);
  json.copy(out, 8);
  return out;
}

/** The on-disk bytes of one tensor, in bounded chunks. */
function* tensorChunks({ dtype, data }: HostTensor): Generator<Uint8Array> {
  if (dtype === 'F16' || dtype === 'BF16') {
    const encode = dtype === 'F16' ? floatBitsToHalfBits : floatBitsToBfloat16Bits;
    const bits = new Uint32Array(data.buffer, data.byteOffset, data.length);
    yield* convertedChunks(bits.length, 2, (out, start) => {
      const half = new Uint16Array(out.buffer, 0, out.length / 2);
      for (let i = 0; i < half.length; i++) half[i] = encode(bits[start + i]);
    });
  } else if (dtype === 'F64' && arrayTypeName(data) === 'Float32Array') {
    const narrow = data as Float32Array;
    yield* convertedChunks(narrow.length, 8, (out, start) => {
      const wide = new Float64Array(out.buffer, 0, out.length / 8);
      for (let i = 0; i < wide.length; i++) wide[i] = narrow[start + i];
    });
  } else {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    for (let start = 0; start < bytes.length; start += IO_CHUNK_BYTES) yield bytes.subarray(start, start + IO_CHUNK_BYTES);
  }
}

/** Runs `fill(out, firstElement)` over a reused scratch buffer, yielding each filled chunk. */
function* convertedChunks(
  count: number,
  bytesPerElement: number,
  fill: (out: Uint8Array, firstElement: number) => void,
): Generator<Uint8Array> {
  const scratch = new Uint8Array(Math.min(count, CONVERT_CHUNK_ELEMENTS) * bytesPerElement);
  for (let start = 0; start < count; start += CONVERT_CHUNK_ELEMENTS) {
    const out = scratch.subarray(0, Math.min(CONVERT_CHUNK_ELEMENTS, count - start) * bytesPerElement);
    fill(out, start);
    yield out;
  }
}

function writeFully(fd: number, bytes: Uint8Array): void {
  for (let done = 0; done < bytes.length;) done += fs.writeSync(fd, bytes, done, bytes.length - done);
}

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints: single files, sharded indexes, and diffusers/transformers directory layouts

const DEFAULT_BASES = ['diffusion_pytorch_model', 'model'];

/**
 * Opens a checkpoint given a `.safetensors` file, a `*.safetensors.index.json` shard index, or a directory holding
 * `<base>[.<variant>].safetensors` or its index. All shards are presented as one set of tensors.
 */
export function openCheckpoint(pathOrDir: string, opts: CheckpointOptions = {}): Checkpoint {
  if (!fs.existsSync(pathOrDir)) throw new SafetensorsError(pathOrDir, 'no such file or directory');
  const file = fs.statSync(pathOrDir).isDirectory()
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
    : [`${base}.${variant}.safetensors`, `${base}.safetensors.index.${variant}.json`, `${base}.${variant}.safetensors.index.json`];
}

function locateWeights(dir: string, bases: string[], variant: string | undefined): string {
  // The variant becomes part of a file name; a separator or ".." in it would reach outside the folder.
  if (variant !== undefined && !/^[A-Za-z0-9_-]+$/.test(variant)) {
    throw new SafetensorsError(dir, `variant ${quoteValue(variant)} may only hold letters, digits, "_" and "-"`);
  }
  const tried = bases.flatMap((base) => weightFileNames(base, variant));
  const found = tried.map((name) => path.join(dir, name)).find(isFile);
  if (found === undefined) throw new SafetensorsError(dir, `no weights file found (tried ${tried.join(', ')})`);
  return found;
}

function isFile(file: string): boolean {
  return fs.statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
}

/**
 * Why `name`, read from an index or pointer file, is not a plain relative path inside the folder holding that file,
 * or undefined when it is. Only the name is checked, not where a symbolic link at that name leads: the Hugging Face
 * cache links every file of a snapshot folder to a shared blob store.
 */
export function unsafeRelativeName(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name.includes('\0')) return 'contains a NUL character';
  if (path.isAbsolute(name) || path.win32.isAbsolute(name)) return 'is an absolute path';
  if (name.split(/[\\/]/).some((part) => part === '..')) return 'leads out of the folder ("..")';
  return undefined;
}

/** Opens every shard named by an index and checks that each key lives in the shard the index names. */
function openShardIndex(indexFile: string): Checkpoint {
  const weightMap = readWeightMap(indexFile);
  for (const [key, name] of weightMap) {
    const why = unsafeRelativeName(name);
    if (why !== undefined) throw new SafetensorsError(indexFile, `shard name ${quoteValue(name)} ${why}; an index may only name files in its own folder`, key);
  }
  const shardNames = [...new Set(weightMap.values())];
  const shardPaths = shardNames.map((name) => path.resolve(path.dirname(indexFile), name));
  shardPaths.forEach((shardPath, i) => {
    if (!fs.existsSync(shardPath)) throw new SafetensorsError(indexFile, `shard "${shardNames[i]}" is missing (${shardPath})`);
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
  let bytes: Buffer;
  try {
    bytes = readRegularFile(indexFile);
  } catch (err) {
    if (err instanceof NotRegularFileError) throw new SafetensorsError(indexFile, err.detail);
    throw err;
  }
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
      if (other !== undefined) throw new SafetensorsError(source, `stored in both ${other.path} and ${shard.path}`, key);
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
