/**
 * A tensor held in ordinary host memory, in PyTorch layout, as read from or written to a
 * safetensors file. Float dtypes (F16, BF16, F32) are always upcast to float32 on read.
 */
export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export type HostData = Float32Array | Int32Array | BigInt64Array | Uint8Array | Int16Array | Int8Array | Float64Array;

export interface HostTensor {
  /** dtype as stored on disk (F16/BF16 data is already upcast to Float32Array). */
  dtype: SafetensorsDtype;
  /** shape in PyTorch order; [] for a 0-d tensor. */
  shape: number[];
  data: HostData;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}
