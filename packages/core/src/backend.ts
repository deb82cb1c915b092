/**
 * Backend selection (spec backends.md §8). `auto` takes, in order: tfjs-node-gpu, tfjs-node
 * (the `tensorflow` backend, when installed), the project's `native` backend (when built),
 * wasm, cpu. `WUERSTCHEN_BACKEND` or an explicit name overrides it.
 */
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
export const BACKENDS: BackendName[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

let announced = false;

function tryRequire(name: string): boolean {
  try {
    // Optional packages: present only when the user installed them.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require(name);
    return true;
  } catch {
    return false;
  }
}

function registerTensorflow(): boolean {
  return tryRequire('@tensorflow/tfjs-node-gpu') || tryRequire('@tensorflow/tfjs-node');
}

function registerNative(): boolean {
  try {
    // Loaded on demand: it loads the compiled addon, which may be missing.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const native = require('./backends/native') as { registerNativeBackend(): boolean };
    return native.registerNativeBackend();
  } catch {
    return false;
  }
}

function registerWasm(): boolean {
  return tryRequire('@tensorflow/tfjs-backend-wasm');
}

const REGISTER: Record<Exclude<BackendName, 'auto'>, () => boolean> = {
  tensorflow: registerTensorflow,
  native: registerNative,
  wasm: registerWasm,
  cpu: () => true,
};

/**
 * Select and initialise a backend; returns its name. Prints the choice once to stderr
 * (unless `quiet`). An unknown or unavailable explicit name is an error that says why.
 */
export async function useBackend(requested?: string, opts: { quiet?: boolean } = {}): Promise<string> {
  const name = (requested ?? process.env.WUERSTCHEN_BACKEND ?? 'auto') as BackendName;
  if (!BACKENDS.includes(name)) {
    throw new Error(`unknown backend "${name}"; expected one of ${BACKENDS.join(', ')}`);
  }
  const order: Exclude<BackendName, 'auto'>[] = name === 'auto' ? ['tensorflow', 'native', 'wasm', 'cpu'] : [name];
  const skipped: string[] = [];
  for (const candidate of order) {
    if (!REGISTER[candidate]()) {
      skipped.push(`${candidate} (not installed)`);
      continue;
    }
    if (await tf.setBackend(candidate)) {
      await tf.ready();
      if (!opts.quiet && !announced) {
        announced = true;
        const note = skipped.length ? ` (skipped: ${skipped.join(', ')})` : '';
        process.stderr.write(`wuerstchen: using tfjs backend "${tf.getBackend()}"${note}\n`);
      }
      return tf.getBackend();
    }
    skipped.push(`${candidate} (failed to initialise)`);
  }
  throw new Error(`backend "${name}" is not available: ${skipped.join(', ')}`);
}
