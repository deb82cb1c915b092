/**
 * Backend selection. `auto` takes, in order: tfjs-node-gpu, tfjs-node
 * (the `tensorflow` backend, when installed), the project's `native` backend (when built),
 * wasm, cpu. `WUERSTCHEN_BACKEND` or an explicit name overrides it.
 */
import * as tf from '@tensorflow/tfjs';

export type BackendName = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
export const BACKENDS: BackendName[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

let announced = false;

/** A backend name that is not one of BACKENDS (given as an argument, or in `$WUERSTCHEN_BACKEND`). */
export class UnknownBackendError extends Error {
  constructor(
    readonly requested: string,
    fromEnvironment = false,
  ) {
    const from = fromEnvironment ? ' (from $WUERSTCHEN_BACKEND)' : '';
    super(`unknown backend "${requested}"${from}; expected one of ${BACKENDS.join(', ')}`);
    this.name = 'UnknownBackendError';
  }
}

/** No backend of the requested ones could be registered and initialised; `skipped` says why for each. */
export class BackendUnavailableError extends Error {
  constructor(
    readonly requested: BackendName,
    readonly skipped: string[],
  ) {
    super(`backend "${requested}" is not available: ${skipped.join(', ')}`);
    this.name = 'BackendUnavailableError';
  }
}

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
 * (unless `quiet`). An unknown name is an UnknownBackendError, an unavailable one a BackendUnavailableError.
 */
export async function useBackend(requested?: string, opts: { quiet?: boolean } = {}): Promise<string> {
  const name = (requested ?? process.env.WUERSTCHEN_BACKEND ?? 'auto') as BackendName;
  if (!BACKENDS.includes(name)) {
    throw new UnknownBackendError(name, requested === undefined);
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
  throw new BackendUnavailableError(name, skipped);
}
