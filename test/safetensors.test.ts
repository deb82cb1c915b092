import fs = require('fs');
import * as path from 'path';
import { HostTensor } from '../packages/core/src/host_tensor';
import {
  MAX_HEADER_BYTES,
  SafetensorsError,
  TensorReader,
  findWeightsFile,
  loadSafetensors,
  openCheckpoint,
  openSafetensors,
  writeSafetensors,
} from '../packages/core/src/safetensors';
import { useTempDir } from './helpers/tmp';
import { GOLDEN } from './helpers/shared';

const tmp = useTempDir('wuerstchen-safetensors-');

// ---------------------------------------------------------------------------------------------------------------
// Helpers

/** Raw safetensors bytes: length prefix (the true one unless given), header text or bytes, data. */
function rawFile(
  header: string | object | Uint8Array,
  data: Uint8Array = new Uint8Array(0),
  declaredLength?: bigint,
): Buffer {
  const headerBytes =
    header instanceof Uint8Array
      ? Buffer.from(header)
      : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(declaredLength ?? BigInt(headerBytes.length));
  return Buffer.concat([prefix, headerBytes, data]);
}

function put(name: string, bytes: Uint8Array): string {
  const file = path.join(tmp(), name);
  fs.writeFileSync(file, bytes);
  return file;
}

function catchError(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

function bytesOf(data: ArrayBufferView): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

function roundTrip(tensors: Record<string, HostTensor>): Map<string, HostTensor> {
  const file = path.join(tmp(), 'round_trip.safetensors');
  writeSafetensors(file, tensors);
  return loadSafetensors(file);
}

/** The data section of a safetensors file and its parsed header. */
function splitFile(file: string): { headerText: string; header: Record<string, any>; data: Buffer } {
  const bytes = fs.readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const headerText = bytes.subarray(8, 8 + n).toString('utf8');
  return { headerText, header: JSON.parse(headerText), data: bytes.subarray(8 + n) };
}

function expectSameTensors(actual: TensorReader, expected: Map<string, HostTensor>): void {
  expect([...actual.keys()].sort()).toEqual([...expected.keys()].sort());
  for (const [key, want] of expected) {
    const got = actual.get(key);
    expect({ key, shape: got.shape }).toEqual({ key, shape: want.shape });
    expect(got.data).toBeInstanceOf(Float32Array);
    expect(bytesOf(got.data).equals(bytesOf(want.data))).toBe(true);
  }
}

function f32(values: number[]): Float32Array {
  return Float32Array.from(values);
}

function float32Bits(data: Float32Array): Uint32Array {
  return new Uint32Array(data.buffer, data.byteOffset, data.length);
}

/** Exact value of a float16 bit pattern, computed independently in float64. */
function halfValue(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

const isHalfNaN = (h: number): boolean => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;

function allPatterns(): Uint16Array {
  return Uint16Array.from({ length: 65536 }, (_, i) => i);
}

// ---------------------------------------------------------------------------------------------------------------
// Hostile files

const F32_TWO = { dtype: 'F32', shape: [2], data_offsets: [0, 8] };
const EIGHT_BYTES = new Uint8Array(8);

interface HostileCase {
  what: string;
  files: Buffer[];
  message: RegExp;
  key?: string;
}

const hostileCases: HostileCase[] = [
  {
    what: 'file shorter than 8 bytes',
    files: [Buffer.alloc(0), Buffer.from([1, 2, 3, 4, 5, 6, 7])],
    message: /shorter than the 8-byte/,
  },
  {
    what: 'header length beyond the file',
    files: [rawFile('{}', EIGHT_BYTES, 1000n), rawFile('{}', new Uint8Array(0), 3n)],
    message: /beyond the end of the file/,
  },
  {
    what: 'header over 100 MB',
    files: [rawFile('{}', EIGHT_BYTES, BigInt(MAX_HEADER_BYTES + 1)), rawFile('{}', EIGHT_BYTES, 2n ** 64n - 1n)],
    message: /exceeds the limit of 104857600 bytes/,
  },
  {
    what: 'header not valid UTF-8',
    files: [
      rawFile(Uint8Array.from([0x7b, 0xff, 0xfe, 0x7d])),
      rawFile(Uint8Array.from([0x7b, 0x22, 0xc3, 0x22, 0x7d])),
    ],
    message: /not valid UTF-8/,
  },
  { what: 'header not JSON', files: [rawFile('{"w": '), rawFile(''), rawFile('{} x')], message: /not valid JSON/ },
  {
    what: 'header not a JSON object',
    files: [rawFile('[]'), rawFile('null'), rawFile('42'), rawFile('"text"')],
    message: /header is not a JSON object/,
  },
  {
    what: 'entry not an object',
    files: [rawFile({ w: [1, 2] }), rawFile({ w: null }), rawFile({ w: 'F32' })],
    message: /entry is not an object/,
    key: 'w',
  },
  {
    what: 'unknown dtype',
    files: [
      rawFile({ w: { ...F32_TWO, dtype: 'F8' } }, EIGHT_BYTES),
      rawFile({ w: { ...F32_TWO, dtype: 'f32' } }, EIGHT_BYTES),
      rawFile({ w: { shape: [2], data_offsets: [0, 8] } }, EIGHT_BYTES),
    ],
    message: /unknown dtype/,
    key: 'w',
  },
  {
    what: 'shape not an array of non-negative integers',
    files: [[-2], [2.5], ['2'], 2, null, [1e300]].map((shape) => rawFile({ w: { ...F32_TWO, shape } }, EIGHT_BYTES)),
    message: /shape .* is not an array of non-negative integers/,
    key: 'w',
  },
  {
    what: 'data_offsets not two non-negative integers with begin <= end',
    files: [[0], [0, 4, 8], [-8, 0], [8, 0], ['0', '8'], null, [0.5, 8]].map((offsets) =>
      rawFile({ w: { ...F32_TWO, data_offsets: offsets } }, EIGHT_BYTES),
    ),
    message: /data_offsets .* is not \[begin, end\]/,
    key: 'w',
  },
  {
    what: 'end beyond the data section',
    files: [
      rawFile({ w: F32_TWO }, new Uint8Array(4)),
      rawFile({ w: { ...F32_TWO, data_offsets: [8, 16] } }, EIGHT_BYTES),
    ],
    message: /end \d+ is beyond the data section/,
    key: 'w',
  },
  {
    what: 'byte length not numel x dtype size',
    files: [
      rawFile({ w: { ...F32_TWO, shape: [3] } }, new Uint8Array(12)),
      rawFile({ w: { ...F32_TWO, dtype: 'F16' } }, EIGHT_BYTES),
      rawFile({ w: { ...F32_TWO, shape: [2 ** 40, 2 ** 40] } }, EIGHT_BYTES),
      rawFile({ w: { ...F32_TWO, shape: [] } }, EIGHT_BYTES),
    ],
    message: /holds 8 bytes but shape/,
    key: 'w',
  },
  {
    what: 'overlapping tensors',
    files: [
      rawFile({ a: F32_TWO, b: { ...F32_TWO, data_offsets: [4, 12] } }, new Uint8Array(12)),
      rawFile({ a: F32_TWO, b: F32_TWO }, EIGHT_BYTES),
    ],
    message: /data overlaps tensor "a"/,
    key: 'b',
  },
  {
    what: '__metadata__ not an object of strings',
    files: [{ n: 1 }, 'pt', null, ['pt'], { format: { x: 'pt' } }].map((metadata) =>
      rawFile({ __metadata__: metadata }),
    ),
    message: /"__metadata__" must be an object of strings/,
  },
];

describe('openSafetensors rejects hostile files', () => {
  test.each(hostileCases)('$what', ({ files, message, key }) => {
    files.forEach((bytes, i) => {
      const file = put(`hostile_${i}.safetensors`, bytes);
      const err = catchError(() => openSafetensors(file));
      expect(err).toBeInstanceOf(SafetensorsError);
      expect(err.message).toContain(file);
      expect(err.message).toMatch(message);
      expect((err as SafetensorsError).file).toBe(file);
      expect((err as SafetensorsError).key).toBe(key);
      if (key !== undefined) expect(err.message).toContain(`"${key}"`);
    });
  });

  test('unknown keys and closed files are errors naming the file and key', () => {
    const file = put('ok.safetensors', rawFile({ w: F32_TWO }, EIGHT_BYTES));
    const reader = openSafetensors(file);
    expect(() => reader.info('nope')).toThrow(SafetensorsError);
    expect(() => reader.get('nope')).toThrow(`${file}: tensor "nope": no such tensor`);
    reader.close();
    reader.close();
    expect(() => reader.get('w')).toThrow(`${file}: tensor "w": file is closed`);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Reading details

describe('openSafetensors', () => {
  test('reads tensors at unaligned offsets, 0-d and empty tensors, metadata and info', () => {
    const values = f32([1.5, -2, 3.25]);
    const big = BigInt64Array.of(-5n, 2n ** 62n);
    const data = Buffer.concat([Buffer.from([9]), bytesOf(values), bytesOf(big), Buffer.from([1, 0, 1])]);
    const header = JSON.stringify({
      __metadata__: { format: 'pt', note: 'x' },
      v: { dtype: 'F32', shape: [3], data_offsets: [1, 13] },
      i: { dtype: 'I64', shape: [2, 1], data_offsets: [13, 29] },
      b: { dtype: 'BOOL', shape: [3], data_offsets: [29, 32] },
      scalar: { dtype: 'U8', shape: [], data_offsets: [0, 1] },
      empty: { dtype: 'F32', shape: [0, 4], data_offsets: [32, 32] },
    });
    // Pad so that the data section also starts at an odd file offset.
    const headerText = header.length % 2 === 0 ? `${header} ` : header;
    expect((8 + headerText.length) % 2).toBe(1);
    const file = put('unaligned.safetensors', rawFile(headerText, data));
    const reader = openSafetensors(file);
    try {
      expect(reader.keys()).toEqual(['scalar', 'v', 'i', 'b', 'empty']);
      expect(reader.metadata).toEqual({ format: 'pt', note: 'x' });
      expect(reader.info('i')).toEqual({ dtype: 'I64', shape: [2, 1], byteLength: 16 });
      expect(reader.get('v')).toEqual({ dtype: 'F32', shape: [3], data: values });
      expect(reader.get('i')).toEqual({ dtype: 'I64', shape: [2, 1], data: big });
      expect(reader.get('b')).toEqual({ dtype: 'BOOL', shape: [3], data: Uint8Array.from([1, 0, 1]) });
      expect(reader.get('scalar')).toEqual({ dtype: 'U8', shape: [], data: Uint8Array.of(9) });
      expect(reader.get('empty')).toEqual({ dtype: 'F32', shape: [0, 4], data: new Float32Array(0) });
    } finally {
      reader.close();
    }
  });

  test('F16 upcast is exact for all 65536 bit patterns', () => {
    const patterns = allPatterns();
    const file = put(
      'all.f16.safetensors',
      rawFile({ h: { dtype: 'F16', shape: [65536], data_offsets: [0, 131072] } }, bytesOf(patterns)),
    );
    const { dtype, data } = loadSafetensors(file).get('h')!;
    expect(dtype).toBe('F16');
    const floats = data as Float32Array;
    const bits = float32Bits(floats);
    for (const h of patterns) {
      if (isHalfNaN(h)) {
        expect(Number.isNaN(floats[h])).toBe(true);
        expect(bits[h] >>> 31).toBe(h >>> 15);
      } else if (!Object.is(floats[h], halfValue(h))) {
        throw new Error(`half 0x${h.toString(16)} decoded to ${floats[h]}, expected ${halfValue(h)}`);
      }
    }
  });

  test('BF16 upcast is the top 16 bits of float32 for all 65536 bit patterns', () => {
    const patterns = allPatterns();
    const file = put(
      'all.bf16.safetensors',
      rawFile({ b: { dtype: 'BF16', shape: [65536], data_offsets: [0, 131072] } }, bytesOf(patterns)),
    );
    const bits = float32Bits(loadSafetensors(file).get('b')!.data as Float32Array);
    expect(bits).toEqual(Uint32Array.from(patterns, (p) => p << 16));
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Round trips

describe('writeSafetensors round trips', () => {
  test('F32 keeps every bit', () => {
    const data = f32([0, -0, 1, -1.5, 1e-45, -3.4028234663852886e38, Infinity, -Infinity, NaN, Math.PI]);
    const back = roundTrip({ w: { dtype: 'F32', shape: [2, 5], data } }).get('w')!;
    expect(back.dtype).toBe('F32');
    expect(back.shape).toEqual([2, 5]);
    expect(bytesOf(back.data).equals(bytesOf(data))).toBe(true);
  });

  test('F16: representable values exactly, others rounded to nearest even', () => {
    const cases: [number, number][] = [
      [0, 0],
      [-0, -0],
      [1, 1],
      [-2, -2],
      [65504, 65504],
      [-65504, -65504],
      [2 ** -24, 2 ** -24],
      [-(2 ** -24), -(2 ** -24)],
      [1023 * 2 ** -24, 1023 * 2 ** -24],
      [2 ** -14, 2 ** -14],
      [Infinity, Infinity],
      [-Infinity, -Infinity],
      [0.1, 0.0999755859375],
      [65519, 65504],
      [65520, Infinity],
      [1e6, Infinity],
      [-1e6, -Infinity],
      [1 + 2 ** -11, 1],
      [1 + 3 * 2 ** -11, 1 + 2 ** -9],
      [2 ** -25, 0],
      [3 * 2 ** -25, 2 ** -23],
      [2 ** -25 * (1 + 2 ** -10), 2 ** -24],
      [-1e-10, -0],
      [2 ** -14 - 2 ** -26, 2 ** -14],
    ];
    const input = f32([...cases.map(([x]) => x), NaN]);
    const back = roundTrip({ h: { dtype: 'F16', shape: [input.length], data: input } }).get('h')!;
    expect(back.dtype).toBe('F16');
    const out = back.data as Float32Array;
    cases.forEach(([x, want], i) => expect({ x, got: out[i] }).toEqual({ x, got: want }));
    expect(Number.isNaN(out[cases.length])).toBe(true);
  });

  test('F16: writing the upcast of every half bit pattern gives the pattern back (NaN becomes 0x7e00)', () => {
    const patterns = allPatterns();
    const floats = Float32Array.from(patterns, halfValue);
    const file = path.join(tmp(), 'all.f16.safetensors');
    writeSafetensors(file, { h: { dtype: 'F16', shape: [65536], data: floats } });
    const written = splitFile(file).data;
    const halves = new Uint16Array(written.buffer.slice(written.byteOffset, written.byteOffset + written.length));
    expect(halves).toEqual(patterns.map((h) => (isHalfNaN(h) ? 0x7e00 : h)));
  });

  test('BF16: representable values exactly, others rounded to nearest even', () => {
    const cases: [number, number][] = [
      [0, 0],
      [-0, -0],
      [1, 1],
      [-3, -3],
      [Infinity, Infinity],
      [-Infinity, -Infinity],
      [2 ** -133, 2 ** -133],
      [2 ** -126, 2 ** -126],
      [3.3895313892515355e38, 3.3895313892515355e38],
      [1 + 2 ** -8, 1],
      [1 + 3 * 2 ** -8, 1 + 2 ** -6],
      [1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7],
      [3.4028234663852886e38, Infinity],
      [0.1, 0.10009765625],
    ];
    const input = f32([...cases.map(([x]) => x), NaN, -NaN]);
    const back = roundTrip({ b: { dtype: 'BF16', shape: [input.length], data: input } }).get('b')!;
    expect(back.dtype).toBe('BF16');
    const out = back.data as Float32Array;
    cases.forEach(([x, want], i) => expect({ x, got: out[i] }).toEqual({ x, got: want }));
    expect(Number.isNaN(out[cases.length])).toBe(true);
    expect(Number.isNaN(out[cases.length + 1])).toBe(true);
  });

  test('I64 including a 0-d tensor, I32, I16, I8, U8, BOOL, F64', () => {
    const tensors: Record<string, HostTensor> = {
      'bn.num_batches_tracked': { dtype: 'I64', shape: [], data: BigInt64Array.of(12345n) },
      ids: { dtype: 'I64', shape: [2, 2], data: BigInt64Array.of(-1n, 0n, 2n ** 63n - 1n, -(2n ** 63n)) },
      tokens: { dtype: 'I32', shape: [3], data: Int32Array.of(49407, -2147483648, 2147483647) },
      short: { dtype: 'I16', shape: [2], data: Int16Array.of(-32768, 32767) },
      tiny: { dtype: 'I8', shape: [2], data: Int8Array.of(-128, 127) },
      bytes: { dtype: 'U8', shape: [1, 3], data: Uint8Array.of(0, 128, 255) },
      mask: { dtype: 'BOOL', shape: [2], data: Uint8Array.of(1, 0) },
      wide: { dtype: 'F64', shape: [2], data: Float64Array.of(0.5, -1e300) },
    };
    const back = roundTrip(tensors);
    expect([...back.keys()]).toEqual(Object.keys(tensors).sort());
    for (const [key, tensor] of Object.entries(tensors)) {
      if (key !== 'wide') expect(back.get(key)).toEqual(tensor);
    }
    expect(back.get('wide')).toEqual({ dtype: 'F64', shape: [2], data: f32([0.5, -Infinity]) });
  });

  test('F64 read back as Float32Array can be written again as F64', () => {
    const back = roundTrip({ x: { dtype: 'F64', shape: [2], data: f32([0.25, -3]) } });
    expect(back.get('x')).toEqual({ dtype: 'F64', shape: [2], data: f32([0.25, -3]) });
  });

  test('accepts a Map and rejects malformed tensors naming the file and key', () => {
    const file = path.join(tmp(), 'bad.safetensors');
    const bad: [HostTensor, RegExp][] = [
      [{ dtype: 'F32', shape: [3], data: f32([1, 2]) }, /data has 2 elements but shape \[3\] needs 3/],
      [{ dtype: 'F16', shape: [2], data: Int32Array.of(1, 2) }, /F16 data must be a Float32Array, got Int32Array/],
      [{ dtype: 'I64', shape: [-1], data: new BigInt64Array(0) }, /shape \[-1\] is not an array/],
      [{ dtype: 'Q4' as HostTensor['dtype'], shape: [1], data: f32([1]) }, /unknown dtype "Q4"/],
    ];
    for (const [tensor, message] of bad) {
      const err = catchError(() => writeSafetensors(file, new Map([['w', tensor]])));
      expect(err).toBeInstanceOf(SafetensorsError);
      expect(err.message).toMatch(message);
      expect(err.message).toContain(`${file}: tensor "w"`);
    }
    expect(() => writeSafetensors(file, { __metadata__: { dtype: 'U8', shape: [], data: Uint8Array.of(1) } })).toThrow(
      /reserved/,
    );
    expect(fs.readdirSync(tmp())).toEqual([]);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Layout and atomicity

describe('writeSafetensors layout', () => {
  test('sorted keys, contiguous data in key order, header padded with spaces to 8 bytes', () => {
    for (let extra = 0; extra < 8; extra++) {
      const file = path.join(tmp(), `layout_${extra}.safetensors`);
      const tensors = new Map<string, HostTensor>([
        ['b', { dtype: 'F32', shape: [2], data: f32([1, 2]) }],
        ['a' + 'x'.repeat(extra), { dtype: 'F16', shape: [3], data: f32([1, 2, 3]) }],
        ['10', { dtype: 'U8', shape: [1], data: Uint8Array.of(7) }],
        ['9', { dtype: 'I64', shape: [], data: BigInt64Array.of(1n) }],
        ['é', { dtype: 'I32', shape: [0], data: new Int32Array(0) }],
      ]);
      writeSafetensors(file, tensors);
      const { headerText, header, data } = splitFile(file);
      expect(Buffer.byteLength(headerText) % 8).toBe(0);
      expect(headerText).toMatch(/^\{.*\} *$/);
      expect(headerText.length - headerText.trimEnd().length).toBeLessThan(8);
      expect(header.__metadata__).toEqual({ format: 'pt' });

      const sorted = [...tensors.keys()].sort();
      const positions = ['__metadata__', ...sorted].map((key) => headerText.indexOf(`${JSON.stringify(key)}:`));
      expect(positions).toEqual([...positions].sort((p, q) => p - q));
      let offset = 0;
      for (const key of sorted) {
        expect(header[key].data_offsets).toEqual([
          offset,
          offset + header[key].data_offsets[1] - header[key].data_offsets[0],
        ]);
        offset = header[key].data_offsets[1];
      }
      expect(offset).toBe(data.length);
      expect([...loadSafetensors(file).keys()]).toEqual(sorted);
    }
  });

  test('writes the given metadata', () => {
    const file = path.join(tmp(), 'meta.safetensors');
    writeSafetensors(file, {}, { format: 'golden-io', '0': 'zero' });
    const reader = openSafetensors(file);
    expect(reader.metadata).toEqual({ format: 'golden-io', '0': 'zero' });
    expect(reader.keys()).toEqual([]);
    reader.close();
  });
});

describe('writeSafetensors is atomic', () => {
  const first = { w: { dtype: 'F32' as const, shape: [2], data: f32([1, 2]) } };
  const second = { w: { dtype: 'F32' as const, shape: [3], data: f32([3, 4, 5]) } };

  test('leaves no temporary files and replaces an existing file', () => {
    const file = path.join(tmp(), 'model.safetensors');
    writeSafetensors(file, first);
    writeSafetensors(file, second);
    expect(fs.readdirSync(tmp())).toEqual(['model.safetensors']);
    expect(loadSafetensors(file).get('w')!.data).toEqual(second.w.data);
  });

  test('a write failing midway leaves the previous file intact and removes the temporary file', () => {
    const file = path.join(tmp(), 'model.safetensors');
    writeSafetensors(file, first);
    const before = fs.readFileSync(file);
    const realWriteSync = fs.writeSync;
    let calls = 0;
    const spy = jest.spyOn(fs, 'writeSync').mockImplementation(((...args: Parameters<typeof fs.writeSync>) => {
      if (++calls === 2) throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
      return (realWriteSync as (...a: unknown[]) => number)(...args);
    }) as typeof fs.writeSync);
    try {
      expect(() => writeSafetensors(file, second)).toThrow(/ENOSPC/);
      expect(calls).toBe(2);
    } finally {
      spy.mockRestore();
    }
    expect(fs.readdirSync(tmp())).toEqual(['model.safetensors']);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  test('an invalid tensor fails before anything is written', () => {
    const file = path.join(tmp(), 'model.safetensors');
    writeSafetensors(file, first);
    const before = fs.readFileSync(file);
    expect(() => writeSafetensors(file, { ...second, z: { dtype: 'F32', shape: [2], data: f32([1]) } })).toThrow(
      SafetensorsError,
    );
    expect(fs.readdirSync(tmp())).toEqual(['model.safetensors']);
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  test('a failing rename removes the temporary file', () => {
    const target = path.join(tmp(), 'occupied');
    fs.mkdirSync(path.join(target, 'child'), { recursive: true });
    expect(() => writeSafetensors(target, first)).toThrow();
    expect(fs.readdirSync(tmp())).toEqual(['occupied']);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Checkpoints

describe('findWeightsFile and openCheckpoint resolution', () => {
  const tensor = (value: number): Record<string, HostTensor> => ({
    w: { dtype: 'F32', shape: [1], data: f32([value]) },
  });

  test('prefers <base>.safetensors over its index and honours variants', () => {
    const dir = tmp();
    writeSafetensors(path.join(dir, 'model.safetensors'), tensor(1));
    writeSafetensors(path.join(dir, 'model.fp16.safetensors'), { w: { dtype: 'F16', shape: [1], data: f32([2]) } });
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), '{"weight_map": {}}');
    expect(findWeightsFile(dir, 'model')).toBe(path.join(dir, 'model.safetensors'));
    expect(findWeightsFile(dir, 'model', 'fp16')).toBe(path.join(dir, 'model.fp16.safetensors'));
    fs.rmSync(path.join(dir, 'model.safetensors'));
    expect(findWeightsFile(dir, 'model')).toBe(path.join(dir, 'model.safetensors.index.json'));

    const checkpoint = openCheckpoint(dir, { variant: 'fp16' });
    expect(checkpoint.files).toEqual([path.join(dir, 'model.fp16.safetensors')]);
    expect(checkpoint.get('w')).toEqual({ dtype: 'F16', shape: [1], data: f32([2]) });
    checkpoint.close();
  });

  test('finds variant shard indexes under both naming schemes', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'diffusion_pytorch_model.bf16.safetensors.index.json'), '{}');
    expect(findWeightsFile(dir, 'diffusion_pytorch_model', 'bf16')).toBe(
      path.join(dir, 'diffusion_pytorch_model.bf16.safetensors.index.json'),
    );
    fs.writeFileSync(path.join(dir, 'diffusion_pytorch_model.safetensors.index.bf16.json'), '{}');
    expect(findWeightsFile(dir, 'diffusion_pytorch_model', 'bf16')).toBe(
      path.join(dir, 'diffusion_pytorch_model.safetensors.index.bf16.json'),
    );
  });

  test('nothing found is an error naming the directory and the names tried', () => {
    const dir = tmp();
    writeSafetensors(path.join(dir, 'model.safetensors'), tensor(1));
    const err = catchError(() => findWeightsFile(dir, 'diffusion_pytorch_model', 'fp16'));
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toContain(dir);
    expect(err.message).toContain('diffusion_pytorch_model.fp16.safetensors');
    expect(err.message).toContain('diffusion_pytorch_model.fp16.safetensors.index.json');

    const defaults = catchError(() => openCheckpoint(dir, { variant: 'bf16' }));
    expect(defaults.message).toContain('diffusion_pytorch_model.bf16.safetensors');
    expect(defaults.message).toContain('model.bf16.safetensors');
    expect(() => openCheckpoint(path.join(dir, 'absent'))).toThrow(SafetensorsError);
  });

  test('a directory without a base opens diffusion_pytorch_model, else model', () => {
    const dir = tmp();
    writeSafetensors(path.join(dir, 'model.safetensors'), tensor(1));
    const single = openCheckpoint(dir);
    expect(single.files).toEqual([path.join(dir, 'model.safetensors')]);
    single.close();
    writeSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), tensor(2));
    const preferred = openCheckpoint(dir);
    expect(preferred.get('w').data).toEqual(f32([2]));
    preferred.close();
  });
});

describe('sharded checkpoints', () => {
  const index = (weightMap: Record<string, string>): string =>
    JSON.stringify({ metadata: { total_size: 0 }, weight_map: weightMap });

  test('a missing shard is an error naming the index file and the shard', () => {
    const source = path.join(GOLDEN, 'loader_prior_sharded');
    const dir = tmp();
    for (const name of [
      'diffusion_pytorch_model.safetensors.index.json',
      'diffusion_pytorch_model-00001-of-00002.safetensors',
    ]) {
      fs.copyFileSync(path.join(source, name), path.join(dir, name));
    }
    const indexFile = path.join(dir, 'diffusion_pytorch_model.safetensors.index.json');
    const err = catchError(() => openCheckpoint(dir));
    expect(err).toBeInstanceOf(SafetensorsError);
    expect(err.message).toContain(indexFile);
    expect(err.message).toContain('diffusion_pytorch_model-00002-of-00002.safetensors');
  });

  test('a key stored in two shards is an error', () => {
    const dir = tmp();
    writeSafetensors(path.join(dir, 'a.safetensors'), { w: { dtype: 'F32', shape: [1], data: f32([1]) } });
    writeSafetensors(path.join(dir, 'b.safetensors'), {
      w: { dtype: 'F32', shape: [1], data: f32([2]) },
      v: { dtype: 'F32', shape: [1], data: f32([3]) },
    });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexFile, index({ w: 'a.safetensors', v: 'b.safetensors' }));
    expect(() => openCheckpoint(indexFile)).toThrow(
      new RegExp(`${indexFile}: tensor "w": stored in both .*a\\.safetensors and .*b\\.safetensors`),
    );
  });

  test('index entries must be found in the shard they name, and the index must be well formed', () => {
    const dir = tmp();
    writeSafetensors(path.join(dir, 'a.safetensors'), { w: { dtype: 'F32', shape: [1], data: f32([1]) } });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    fs.writeFileSync(indexFile, index({ w: 'a.safetensors', ghost: 'a.safetensors' }));
    expect(() => openCheckpoint(indexFile)).toThrow(`${indexFile}: tensor "ghost": not found in shard "a.safetensors"`);
    fs.writeFileSync(indexFile, '{"weight_map": {"w": 1}}');
    expect(() => openCheckpoint(indexFile)).toThrow(`${indexFile}: "weight_map" must be an object`);
    fs.writeFileSync(indexFile, '[');
    expect(() => openCheckpoint(indexFile)).toThrow(/shard index is not valid JSON/);
  });
});

// ---------------------------------------------------------------------------------------------------------------
// Golden loader fixtures

interface LoaderCase {
  weights: string;
  weights_dtype?: string;
  expected: string;
  shards?: { file: string; num_tensors: number }[];
}

function readCase(name: string): { dir: string; spec: LoaderCase } {
  const dir = path.join(GOLDEN, name);
  return { dir, spec: JSON.parse(fs.readFileSync(path.join(dir, 'case.json'), 'utf8')) };
}

describe('golden loader fixtures', () => {
  test.each([
    ['loader_prior_fp16', 'fp16'],
    ['loader_prior_bf16', 'bf16'],
  ])('%s upcasts bit-exactly to expected_float32', (name, variant) => {
    const { dir, spec } = readCase(name);
    expect(fs.readdirSync(dir)).toEqual(expect.arrayContaining([spec.weights, spec.expected]));
    const checkpoint = openCheckpoint(dir, { base: 'diffusion_pytorch_model', variant });
    try {
      expect(checkpoint.files).toEqual([path.join(dir, spec.weights)]);
      for (const key of checkpoint.keys()) expect(checkpoint.info(key).dtype).toBe(spec.weights_dtype);
      expectSameTensors(checkpoint, loadSafetensors(path.join(dir, spec.expected)));
    } finally {
      checkpoint.close();
    }
  });

  test.each([
    ['loader_prior_fp16', 'F16'],
    ['loader_prior_bf16', 'BF16'],
  ] as const)('writing prior_tiny float32 weights as %s reproduces the fixture bytes', (name, dtype) => {
    const { dir, spec } = readCase(name);
    const source = loadSafetensors(path.join(GOLDEN, 'prior_tiny', 'weights.safetensors'));
    const file = path.join(tmp(), 'converted.safetensors');
    writeSafetensors(file, new Map([...source].map(([key, t]) => [key, { ...t, dtype }])));
    expect(fs.readFileSync(file).equals(fs.readFileSync(path.join(dir, spec.weights)))).toBe(true);
  });

  test('loader_prior_sharded through its index equals prior_tiny weights', () => {
    const { dir, spec } = readCase('loader_prior_sharded');
    expect(fs.readdirSync(dir)).toEqual(expect.arrayContaining([spec.weights, ...spec.shards!.map((s) => s.file)]));
    const expected = loadSafetensors(path.resolve(dir, spec.expected));
    for (const target of [path.join(dir, spec.weights), dir]) {
      const checkpoint = openCheckpoint(target);
      try {
        expect(checkpoint.files).toEqual(spec.shards!.map((s) => path.join(dir, s.file)));
        expectSameTensors(checkpoint, expected);
      } finally {
        checkpoint.close();
      }
    }
    for (const shard of spec.shards!) expect(loadSafetensors(path.join(dir, shard.file)).size).toBe(shard.num_tensors);
  });
});
