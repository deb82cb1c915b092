/**
 * LoRA files of the Würstchen prior in diffusers' convention, so that
 * `WuerstchenPriorPipeline.load_lora_weights(...)` (diffusers' `StableDiffusionLoraLoaderMixin`,
 * `unet_name = "prior"`) reads what we write, and we read what its `save_lora_weights` writes.
 * Decoder (Stage B) adapters use the same layout under `decoder.`: diffusers has no LoRA loader
 * for `WuerstchenDecoderPipeline`, so that prefix is ours. One file may hold both.
 *
 * File `pytorch_lora_weights.safetensors`, F32, keys peft's (`get_peft_model_state_dict`) with the
 * pipeline's `prior.` prefix:
 *   `prior.blocks.2.attention.to_q.lora_A.weight`  `[r, in]`
 *   `prior.blocks.2.attention.to_q.lora_B.weight`  `[out, r]`
 * (1×1 convs: `[r, in, 1, 1]` and `[out, r, 1, 1]`). alpha travels in the safetensors metadata
 * `lora_adapter_metadata`, the JSON of peft's LoraConfig with `prior.`-prefixed fields
 * (`prior.r`, `prior.lora_alpha`, `prior.target_modules`), which diffusers ≥ 0.34 reads; without
 * it diffusers (and we) take alpha = r, a scale of 1. A file whose keys carry no component prefix
 * (peft's bare `get_peft_model_state_dict`) is read as one model's.
 *
 * Also read: the older diffusers layouts `<path>.lora.down.weight` / `.lora.up.weight` and the
 * attention-processor one of the first Würstchen LoRA example
 * (`prior.<attn>.processor.to_q_lora.down.weight`, `to_out_lora` = `to_out.0`), and per-module
 * `<path>.alpha` scalars.
 */
import { HostTensor, LoraError, LoraNetwork, LoraTensors, Module, openSafetensors } from '@wuerstchen/core';
import { fileStore, joinPath } from '@wuerstchen/core/internal';

/** diffusers' file name for LoRA weights (`LORA_WEIGHT_NAME_SAFE`). */
export const LORA_WEIGHT_NAME = 'pytorch_lora_weights.safetensors';
/** diffusers' safetensors metadata entry holding the LoraConfig (`LORA_ADAPTER_METADATA_KEY`). */
export const LORA_ADAPTER_METADATA_KEY = 'lora_adapter_metadata';
/** The network a LoRA addresses, and its key prefix (`prior` is `WuerstchenPriorPipeline.unet_name`). */
export type LoraComponent = 'prior' | 'decoder';
export const LORA_COMPONENTS: readonly LoraComponent[] = ['prior', 'decoder'];

/** `file`, or `<file>/pytorch_lora_weights.safetensors` for a folder (as `load_lora_weights(folder)`). */
export function loraFile(file: string): string {
  return kindOf(file) === 'folder' ? joinPath(file, LORA_WEIGHT_NAME) : file;
}

function kindOf(name: string): 'file' | 'folder' | undefined {
  return fileStore(name).kind(name);
}

function mostCommon(xs: number[]): number {
  const counts = new Map<number, number>();
  for (const x of xs) counts.set(x, (counts.get(x) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1])[0][0];
}

/** The LoraConfig fields diffusers rebuilds the adapter from (unprefixed). */
export function loraConfigOf(net: LoraNetwork): Record<string, unknown> {
  const adapters = [...net.adapters];
  const r = mostCommon(adapters.map(([, a]) => a.rank));
  const alpha = mostCommon(adapters.map(([, a]) => a.alpha));
  const config: Record<string, unknown> = { r, lora_alpha: alpha, target_modules: net.paths.slice().sort() };
  const rankPattern = Object.fromEntries(adapters.filter(([, a]) => a.rank !== r).map(([p, a]) => [p, a.rank]));
  const alphaPattern = Object.fromEntries(adapters.filter(([, a]) => a.alpha !== alpha).map(([p, a]) => [p, a.alpha]));
  if (Object.keys(rankPattern).length) config.rank_pattern = rankPattern;
  if (Object.keys(alphaPattern).length) config.alpha_pattern = alphaPattern;
  return config;
}

type Part = 'A' | 'B' | 'alpha';

/** Module path and part of one (unprefixed) LoRA key in any of the layouts we read, or null. */
function parseKey(key: string): { path: string; part: Part } | null {
  let m = /^(.+)\.lora_([AB])\.weight$/.exec(key);
  if (m) return { path: m[1], part: m[2] as Part };
  m = /^(.+)\.lora\.(down|up)\.weight$/.exec(key);
  if (m) return { path: m[1], part: m[2] === 'down' ? 'A' : 'B' };
  m = /^(.+)\.processor\.(to_q|to_k|to_v|to_out)_lora\.(down|up)\.weight$/.exec(key);
  if (m) return { path: `${m[1]}.${m[2] === 'to_out' ? 'to_out.0' : m[2]}`, part: m[3] === 'down' ? 'A' : 'B' };
  m = /^(.+)\.alpha$/.exec(key);
  if (m) return { path: m[1], part: 'alpha' };
  return null;
}

/** alpha of `modulePath` from a LoraConfig: `alpha_pattern` entry (peft's suffix rule), else `lora_alpha`. */
function configAlpha(config: Record<string, unknown> | null, modulePath: string): number | undefined {
  if (!config) return undefined;
  const pattern = (config.alpha_pattern ?? {}) as Record<string, number>;
  const hit = Object.keys(pattern).find((k) => modulePath === k || modulePath.endsWith(`.${k}`));
  const v = hit !== undefined ? pattern[hit] : config.lora_alpha;
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : undefined;
}

/** The `<component>.`-scoped LoraConfig in a file's metadata (all of it for an unprefixed file), or null. */
function metadataConfig(
  meta: Record<string, string>,
  scope: string | null,
  file: string,
): Record<string, unknown> | null {
  const raw = meta[LORA_ADAPTER_METADATA_KEY];
  if (!raw) return null;
  let all: Record<string, unknown>;
  try {
    all = JSON.parse(raw) as Record<string, unknown>;
  } catch (e) {
    throw new LoraError(`${file}: metadata ${LORA_ADAPTER_METADATA_KEY} is not JSON (${(e as Error).message})`);
  }
  if (scope === null) return all;
  const own = Object.entries(all).filter(([k]) => k.startsWith(scope));
  return own.length ? Object.fromEntries(own.map(([k, v]) => [k.slice(scope.length), v])) : null;
}

/** The components whose prefix a file's keys carry (empty for an unprefixed file). */
function prefixesOf(keys: string[]): LoraComponent[] {
  return LORA_COMPONENTS.filter((c) => keys.some((k) => k.startsWith(`${c}.`)));
}

/** The components a LoRA file (or folder) holds adapters for; an unprefixed file counts as the prior's. */
export function loraComponents(fileOrDir: string): LoraComponent[] {
  const reader = openSafetensors(existingLoraFile(fileOrDir));
  try {
    const found = prefixesOf(reader.keys());
    return found.length ? found : ['prior'];
  } finally {
    reader.close();
  }
}

function existingLoraFile(fileOrDir: string): string {
  const file = loraFile(fileOrDir);
  if (kindOf(file) === undefined) throw new LoraError(`${file}: no such LoRA file`);
  return file;
}

/**
 * The `component`'s adapters in a LoRA file (or a folder holding `pytorch_lora_weights.safetensors`),
 * by module path. Keys for the text encoder or anything unrecognised are an error: loading part of
 * a file would silently change what it does.
 */
export function readLoraFile(fileOrDir: string, component: LoraComponent): Map<string, LoraTensors> {
  const file = existingLoraFile(fileOrDir);
  const reader = openSafetensors(file);
  try {
    const keys = reader.keys();
    const prefixed = prefixesOf(keys).length > 0;
    const known = (k: string) => LORA_COMPONENTS.some((c) => k.startsWith(`${c}.`));
    const foreign = prefixed ? keys.filter((k) => !known(k)) : keys.filter((k) => k.startsWith('text_encoder.'));
    if (foreign.length) {
      throw new LoraError(
        `${file}: only LoRA for the prior and the decoder (keys "prior.…", "decoder.…") is supported; also found ${foreign.slice(0, 4).join(', ')}${foreign.length > 4 ? ', …' : ''}`,
      );
    }
    const scope = prefixed ? `${component}.` : null;
    const own = scope === null ? keys : keys.filter((k) => k.startsWith(scope));
    if (!own.length) throw new LoraError(`${file} holds no LoRA for the ${component}`);
    const config = metadataConfig(reader.metadata, scope, file);
    const parts = new Map<string, Partial<Record<Part, HostTensor>>>();
    const unknown: string[] = [];
    for (const key of own) {
      const parsed = parseKey(scope === null ? key : key.slice(scope.length));
      if (!parsed) {
        unknown.push(key);
        continue;
      }
      const entry = parts.get(parsed.path) ?? {};
      entry[parsed.part] = reader.get(key);
      parts.set(parsed.path, entry);
    }
    if (unknown.length)
      throw new LoraError(
        `${file}: keys that are not LoRA weights of a Linear or 1×1 conv: ${unknown.slice(0, 6).join(', ')}${unknown.length > 6 ? ', …' : ''}`,
      );
    const out = new Map<string, LoraTensors>();
    for (const [p, e] of parts) {
      if (!e.A || !e.B)
        throw new LoraError(`${file}: ${p} has ${e.A ? 'lora_A' : 'lora_B'} but no ${e.A ? 'lora_B' : 'lora_A'}`);
      const alpha = e.alpha ? Number(e.alpha.data[0]) : configAlpha(config, p);
      out.set(p, { A: e.A, B: e.B, alpha });
    }
    return out;
  } finally {
    reader.close();
  }
}

/** Read the `component`'s adapters from a LoRA file and attach them to `model` with strength `scale`. */
export function loadLoraFile(model: Module, fileOrDir: string, component: LoraComponent, scale = 1): LoraNetwork {
  const net = LoraNetwork.fromTensors(model, readLoraFile(fileOrDir, component), loraFile(fileOrDir));
  net.multiplier = scale;
  return net;
}

/** `FILE[:scale]` of `--lora` (scale default 1; a FILE that exists as given wins over a split). */
export function parseLoraSpec(spec: string): { file: string; scale: number } {
  const m = /^(.+):([^:]*)$/.exec(spec);
  if (m && kindOf(spec) === undefined) {
    const scale = Number(m[2]);
    if (m[2].trim() === '' || !Number.isFinite(scale))
      throw new LoraError(`--lora ${JSON.stringify(spec)}: the scale after ":" must be a number`);
    return { file: m[1], scale };
  }
  return { file: spec, scale: 1 };
}

/**
 * The LoRA networks of a pipeline's model, in load order. The model may be freed and loaded
 * again between calls (offloading); `attach()` puts every network back on the current copy,
 * merged when fused.
 */
export class LoraStack {
  private readonly nets: LoraNetwork[] = [];
  private fusedState = false;

  get networks(): readonly LoraNetwork[] {
    return this.nets;
  }

  get fused(): boolean {
    return this.fusedState;
  }

  add(net: LoraNetwork): void {
    if (this.fusedState) net.merge();
    this.nets.push(net);
  }

  attach(model: Module): void {
    for (const n of this.nets) n.attach(model);
  }

  /** Merge every network into the weights (in load order); networks added later are merged as they come. */
  fuse(model: () => Module): void {
    if (this.nets.length) {
      this.attach(model());
      for (const n of this.nets) n.merge();
    }
    this.fusedState = true;
  }

  /** Restore the weights exactly (in reverse load order). */
  unfuse(): void {
    for (const n of [...this.nets].reverse()) n.unmerge();
    this.fusedState = false;
  }

  /** Take every network off the model and free it. */
  clear(): void {
    for (const n of this.nets.splice(0).reverse()) n.dispose();
    this.fusedState = false;
  }
}
