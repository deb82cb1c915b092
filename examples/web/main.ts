/**
 * The demo page: loads the bundled tiny model from the server and generates with the same pipeline code as Node.
 * Backends: webgpu where the browser has it, webgl, wasm (its binaries are served under /tfjs-wasm/).
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-webgpu';
import { setWasmPaths } from '@tensorflow/tfjs-backend-wasm';
import { ProgressEvent, TINY_MODEL, WuerstchenCombinedPipeline, tensorToImages, encodePng } from 'wuerstchen';

const MODEL_URL = 'models/wuerstchen-tiny/';
const STAGES = ['prior', 'decoder', 'vqgan'] as const;

const byId = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const form = byId<HTMLFormElement>('form');
const prompt = byId<HTMLInputElement>('prompt');
const seed = byId<HTMLInputElement>('seed');
const priorSteps = byId<HTMLInputElement>('prior-steps');
const decoderSteps = byId<HTMLInputElement>('decoder-steps');
const backend = byId<HTMLSelectElement>('backend');
const button = byId<HTMLButtonElement>('generate');
const status = byId<HTMLParagraphElement>('status');
const canvas = byId<HTMLCanvasElement>('picture');
const download = byId<HTMLAnchorElement>('download');

/** Backends this browser offers, best first: webgpu only where the browser finds a GPU adapter. */
async function availableBackends(): Promise<string[]> {
  const gpu = (navigator as { gpu?: { requestAdapter(): Promise<unknown> } }).gpu;
  const webgpu = gpu !== undefined && (await gpu.requestAdapter().catch(() => null)) !== null;
  return [...(webgpu ? ['webgpu'] : []), 'webgl', 'wasm'];
}

function showProgress({ stage, step, total, itPerSec }: ProgressEvent): void {
  const bar = byId<HTMLProgressElement>(`progress-${stage}`);
  bar.max = total;
  bar.value = step;
  byId(`rate-${stage}`).textContent = step > 0 ? `${step}/${total}, ${itPerSec.toFixed(1)} it/s` : `0/${total}`;
}

function showStatus(text: string, error = false): void {
  status.textContent = text;
  status.classList.toggle('error', error);
}

/** Draws an 8-bit RGB image on the canvas at its own size (CSS scales it up). */
function draw(data: Uint8Array, width: number, height: number): void {
  const rgba = new ImageData(width, height);
  for (let p = 0; p < width * height; p++) {
    rgba.data.set(data.subarray(p * 3, p * 3 + 3), p * 4);
    rgba.data[p * 4 + 3] = 255;
  }
  canvas.width = width;
  canvas.height = height;
  canvas.getContext('2d')!.putImageData(rgba, 0, 0);
}

async function generate(pipe: WuerstchenCombinedPipeline): Promise<void> {
  button.disabled = true;
  download.hidden = true;
  STAGES.forEach((stage) =>
    showProgress({ stage, step: 0, total: 1, itPerSec: 0, etaSeconds: NaN, elapsedSeconds: 0 }),
  );
  try {
    await tf.setBackend(backend.value);
    await tf.ready();
    showStatus(`generating on ${tf.getBackend()}…`);
    const started = performance.now();
    const { images } = await pipe(prompt.value, {
      width: TINY_MODEL.width,
      height: TINY_MODEL.height,
      priorNumInferenceSteps: Number(priorSteps.value),
      priorGuidanceScale: TINY_MODEL.priorGuidance,
      numInferenceSteps: Number(decoderSteps.value),
      seed: Number(seed.value),
      onProgress: showProgress,
    });
    const [image] = await tensorToImages(images!);
    images!.dispose();
    const seconds = (performance.now() - started) / 1e3;
    draw(image.data, image.width, image.height);
    URL.revokeObjectURL(download.href);
    download.href = URL.createObjectURL(new Blob([new Uint8Array(encodePng(image))], { type: 'image/png' }));
    download.download = `wuerstchen-seed${seed.value}.png`;
    download.hidden = false;
    showStatus(`done in ${seconds.toFixed(1)} s on ${tf.getBackend()}`);
  } catch (err) {
    showStatus(`error: ${(err as Error).message}`, true);
    console.error(err);
  } finally {
    button.disabled = false;
  }
}

async function start(): Promise<void> {
  setWasmPaths('tfjs-wasm/');
  prompt.value = TINY_MODEL.examplePrompt;
  priorSteps.value = String(TINY_MODEL.priorSteps);
  decoderSteps.value = String(TINY_MODEL.decoderSteps);
  const backends = await availableBackends();
  for (const name of backends) backend.add(new Option(name, name));
  backend.value = backends[0];
  showStatus('loading the model…');
  const started = performance.now();
  // keep every network loaded: the page generates again and again, and the model is small
  const pipe = await WuerstchenCombinedPipeline.fromUrl(MODEL_URL, { offload: false });
  showStatus(`model loaded in ${((performance.now() - started) / 1e3).toFixed(1)} s`);
  button.textContent = 'Generate';
  button.disabled = false;
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void generate(pipe);
  });
}

start().catch((err: Error) => {
  showStatus(`error: ${err.message}`, true);
  console.error(err);
});
