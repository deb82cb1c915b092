/**
 * Safetensors in Node: reading (safetensors_read.ts, which also runs in browsers) with files on disk, and writing.
 * Writing streams tensor data in chunks to a temporary file that is renamed over the target when complete.
 */
import * as fs from 'fs';
import './disk';
import { HostTensor, SafetensorsDtype, numel } from './host_tensor';
import { DTYPE_SIZE, METADATA_KEY, SafetensorsError, isDtype, isIndexArray } from './safetensors_read';

export * from './safetensors_read';

/** Largest single write handed to fs (keeps well below the 2 GiB per-call limit). */
const IO_CHUNK_BYTES = 64 * 1024 * 1024;
/** Elements converted per chunk when writing F16/BF16/F64 from another array type. */
const CONVERT_CHUNK_ELEMENTS = 4 * 1024 * 1024;

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
  if (data.length !== numel(shape))
    fail(`data has ${data.length} elements but shape [${shape.join(', ')}] needs ${numel(shape)}`);
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
  const fields = plan.map(
    ({ key, tensor, begin, end }) =>
      `${JSON.stringify(key)}:{"dtype":"${tensor.dtype}","shape":${JSON.stringify(tensor.shape)},"data_offsets":[${begin},${end}]}`,
  );
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
    for (let start = 0; start < bytes.length; start += IO_CHUNK_BYTES)
      yield bytes.subarray(start, start + IO_CHUNK_BYTES);
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
