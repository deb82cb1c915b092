/**
 * Training configurations ("schedules as data", JSON files under configs/). A configuration names
 * the stage, the models, the optimiser, the objective and an ordered list of phases; the trainer
 * walks the phases by itself and records the current one in its state.
 *
 * String values may use `${shared}` (= $WUERSTCHEN_SHARED, default `<repo>/../shared`) and
 * `${configDir}`; relative paths are resolved against the config file's folder.
 */
import * as fs from 'fs';
import * as path from 'path';
import { LossWeighting } from './objectives';
import { InitRule, InitSpec } from './init';
import { DEFAULT_MAX_IMAGE_PIXELS } from './data/image';

export type Stage = 'a' | 'b' | 'c';

export interface PhaseConfig {
  name: string;
  /** optimizer updates in this phase. */
  steps: number;
  /** images per update (= micro batch × grad_accum). */
  batch_size: number;
  grad_accum: number;
  /** crop side of the training image (Stage A/B input; Stage C crop before the effnet resize). */
  image_size: number;
  /** side of the semantic compressor's input (Stage B/C). */
  effnet_size?: number;
  /** aspect-ratio mixing (Stage C, phase C3): H/W ratios; each batch uses one bucket of area effnet_size². */
  aspect_ratios?: number[];
  /** bucket dims are multiples of this (the compressor's stride), default 32. */
  bucket_multiple?: number;
  /** probability of a random bucket instead of the nearest (SC bucketeer_random_ratio 0.05). */
  bucket_random_p?: number;
  random_crop: boolean;
  /** false: crop straight from the full-size image instead of resizing its short side to image_size first. */
  resize: boolean;
  hflip: boolean;
  /** Stage B: keep the compressor fixed (eval mode, no updates) in this phase, so Stage C can train on its final maps meanwhile. */
  freeze_effnet?: boolean;
  /**
   * Stage B: train the compressor alone, on its heads' losses (objective.effnet_words, effnet_patches), before
   * the decoder starts: our stand-in for the paper's ImageNet-pretrained compressor. These phases come first,
   * and their learning-rate schedule is separate from the decoder's.
   */
  compressor_only?: boolean;
  /** overrides optimizer.lr for this phase. */
  lr?: number;
  /** free-form note (e.g. the paper's latent size). */
  note?: string;
}

export interface OptimizerConfig {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  /** linear warm-up updates (GradualWarmupScheduler; not restarted between phases). */
  warmup: number;
  grad_clip: number;
}

export interface TrainConfig {
  stage: Stage;
  name: string;
  seed: number;
  /** constructor config of the trained model (prior / decoder / vqgan). */
  model: Record<string, unknown>;
  /** start from these weights instead of the seeded init (a model folder or a run folder). */
  init_from?: string;
  /**
   * Initialisation rules tried before the stage's own (first match wins): `{"match": "<regex over
   * state-dict keys>", "init": {"kind": "xavier" | "normal" | ..., ...}, "scale": n}`. E.g. the
   * reference's N(0, 0.02) for the prior's cond_mapper suits c = 1536, not a tiny width.
   */
  init_rules: InitRule[];
  /** Stage B/C: CLIP text encoder folder (transformers layout) and tokenizer folder. */
  text_encoder?: string;
  tokenizer?: string;
  /** Stage B (trained jointly) / Stage C (frozen): the semantic compressor. */
  effnet?: { from?: string; config?: Record<string, unknown> };
  /** Stage B: the frozen Stage A. */
  vqgan?: { from?: string; config?: Record<string, unknown> };
  /** Stage A: the discriminator. */
  discriminator?: { c_hidden: number; depth: number; lr: number; betas: [number, number]; weight_decay: number };
  optimizer: OptimizerConfig;
  /** Stage A proxy schedule (OneCycle) instead of warm-up. */
  one_cycle?: { pct_start: number; div_factor: number; final_div_factor: number };
  ema: { every: number; start: number; beta: number } | null;
  objective: {
    t_sampler: 'dome' | 'uniform' | 'gdf';
    p2: { k: number; gamma: number } | null;
    /** how the ε-MSE is weighted per sample: 'p2' (default; the p2 field, none when null) or 'x0' (1/SNR capped at x0_weight_max). */
    weighting: 'p2' | 'x0';
    x0_weight_max: number;
    /**
     * Stage C: x0 = (effnet + latent_std) / latent_mean (diffusers' model_index names). 'dome' is the
     * reference's (42, 1); 'fit' measures the compressor's mean and std on 256 training images so
     * the target has zero mean and unit std.
     */
    latent_scaling: 'dome' | 'fit' | { latent_mean: number; latent_std: number };
    caption_dropout: number;
    caption_dropout_mode: 'batch' | 'sample';
    effnet_dropout: number;
    effnet_noise: number;
    effnet_noise_tmax: number;
    /**
     * Stage B: weight of the compressor's caption-word loss while it trains (0 = off; see caption_words.ts),
     * and how many buckets the caption's token ids are hashed into.
     */
    effnet_words: number;
    effnet_words_buckets: number;
    /** Stage B: weight of the compressor's patch loss while it trains (0 = off; see patch_head.ts). */
    effnet_patches: number;
    /** Stage A weights. */
    rec_weight: number;
    adv_weight: number;
    vq_weight: number;
    commitment: number;
    disc_start: number;
    /** Stage A: save `scale_factor` = the std of the unquantised latents, so Stage B's targets have unit std. */
    fit_scale_factor: boolean;
    /** Stage A: probability per batch that the decoder is trained on the quantised latents (else the continuous ones). */
    quantize_p: number;
  };
  /** dropout in the trained model: 'seeded' (tf.dropout with seeds from the run RNG) or 'off'. */
  dropout: 'seeded' | 'off';
  phases: PhaseConfig[];
  checkpoint_every: number;
  keep_checkpoints: number;
  sample_every: number;
  sample_prompts: string[];
  sample_steps: number;
  sample_cfg: number;
  sample_images: number;
  log_every: number;
  shuffle_buffer: number;
  /** images whose header declares more pixels (width × height) are skipped before decoding. */
  max_image_pixels: number;
  /** a bad shard, unreadable or oversized image or malformed manifest line is an error instead of a counted skip. */
  strict_data: boolean;
}

export class ConfigError extends Error {
  constructor(file: string, detail: string) {
    super(`${file}: ${detail}`);
    this.name = 'ConfigError';
  }
}

export function sharedDir(): string {
  return process.env.WUERSTCHEN_SHARED ?? path.resolve(__dirname, '../../../../shared');
}

function substitute(v: unknown, configDir: string): unknown {
  if (typeof v === 'string') return v.replace(/\$\{shared\}/g, sharedDir()).replace(/\$\{configDir\}/g, configDir);
  if (Array.isArray(v)) return v.map((x) => substitute(x, configDir));
  if (v && typeof v === 'object')
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, substitute(x, configDir)]));
  return v;
}

const STAGE_DEFAULTS: Record<Stage, { optimizer: OptimizerConfig; ema: TrainConfig['ema'] }> = {
  c: {
    optimizer: { lr: 1e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01, warmup: 10000, grad_clip: 1.0 },
    ema: { every: 100, start: 5000, beta: 0.9 },
  },
  b: {
    optimizer: { lr: 1e-4, betas: [0.9, 0.95], eps: 1e-8, weight_decay: 0.01, warmup: 10000, grad_clip: 1.0 },
    ema: null,
  },
  a: {
    optimizer: { lr: 3e-4, betas: [0.9, 0.999], eps: 1e-8, weight_decay: 0.01, warmup: 0, grad_clip: 1.0 },
    ema: null,
  },
};

/** Read, substitute, default and validate a configuration. */
export function loadConfig(file: string, stage?: Stage): TrainConfig {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new ConfigError(file, `cannot read configuration (${(e as Error).message})`);
  }
  return parseConfig(raw, file, stage);
}

/** The keys each part of a training config may hold (keys starting with "_", such as "_comment", are notes). */
const KNOWN_KEYS: Record<string, readonly string[]> = {
  '': [
    'stage',
    'name',
    'seed',
    'model',
    'init_from',
    'init_rules',
    'text_encoder',
    'tokenizer',
    'effnet',
    'vqgan',
    'discriminator',
    'optimizer',
    'one_cycle',
    'ema',
    'objective',
    'dropout',
    'phases',
    'checkpoint_every',
    'keep_checkpoints',
    'sample_every',
    'sample_prompts',
    'sample_steps',
    'sample_cfg',
    'sample_images',
    'log_every',
    'shuffle_buffer',
    'max_image_pixels',
    'strict_data',
  ],
  phases: [
    'name',
    'steps',
    'batch_size',
    'grad_accum',
    'image_size',
    'effnet_size',
    'aspect_ratios',
    'bucket_multiple',
    'bucket_random_p',
    'random_crop',
    'resize',
    'hflip',
    'freeze_effnet',
    'compressor_only',
    'lr',
    'note',
  ],
  objective: [
    't_sampler',
    'p2',
    'weighting',
    'x0_weight_max',
    'latent_scaling',
    'caption_dropout',
    'caption_dropout_mode',
    'effnet_dropout',
    'effnet_noise',
    'effnet_noise_tmax',
    'effnet_words',
    'effnet_words_buckets',
    'effnet_patches',
    'rec_weight',
    'adv_weight',
    'vq_weight',
    'commitment',
    'disc_start',
    'fit_scale_factor',
    'quantize_p',
  ],
  optimizer: ['lr', 'betas', 'eps', 'weight_decay', 'warmup', 'grad_clip'],
  ema: ['every', 'start', 'beta'],
  one_cycle: ['pct_start', 'div_factor', 'final_div_factor'],
  discriminator: ['c_hidden', 'depth', 'lr', 'betas', 'weight_decay'],
  effnet: ['from', 'config'],
  vqgan: ['from', 'config'],
};

/** Levenshtein distance (for "did you mean"). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur.push(Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1)));
    prev = cur;
  }
  return prev[b.length];
}

/** Rejects a key that is not a config field (a typo would otherwise run silently with the default), naming the nearest field. */
function checkKeys(obj: unknown, part: string, where: string, fail: (d: string) => never): void {
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return;
  const known = KNOWN_KEYS[part];
  for (const key of Object.keys(obj)) {
    if (key.startsWith('_') || known.includes(key)) continue;
    const nearest = known.reduce((best, k) => (editDistance(key, k) < editDistance(key, best) ? k : best), known[0]);
    const hint =
      editDistance(key, nearest) <= Math.max(2, Math.floor(nearest.length / 3)) ? `; did you mean "${nearest}"?` : '';
    fail(`unknown key "${where}${key}"${hint} (known: ${known.join(', ')})`);
  }
}

export function parseConfig(raw0: Record<string, unknown>, file: string, stage?: Stage): TrainConfig {
  const dir = path.dirname(path.resolve(file));
  const raw = substitute(raw0, dir) as Record<string, unknown>;
  const fail = (d: string): never => {
    throw new ConfigError(file, d);
  };
  checkKeys(raw, '', '', fail);
  for (const part of ['objective', 'optimizer', 'ema', 'one_cycle', 'discriminator', 'effnet', 'vqgan'])
    checkKeys(raw[part], part, `${part}.`, fail);
  if (Array.isArray(raw.phases)) raw.phases.forEach((p, i) => checkKeys(p, 'phases', `phases[${i}].`, fail));
  const st = (raw.stage ?? stage) as Stage;
  if (!['a', 'b', 'c'].includes(st)) fail(`"stage" must be "a", "b" or "c"`);
  if (stage && st !== stage) fail(`this is a stage-${st} configuration, not stage-${stage}`);
  const defs = STAGE_DEFAULTS[st];
  const obj = (raw.objective ?? {}) as Record<string, unknown>;
  const resolvePath = (p: unknown): string | undefined => (typeof p === 'string' ? path.resolve(dir, p) : undefined);
  const phasesRaw = raw.phases;
  if (!Array.isArray(phasesRaw) || phasesRaw.length === 0) fail('"phases" must be a non-empty list');
  const phases: PhaseConfig[] = (phasesRaw as Record<string, unknown>[]).map((p, i) => {
    const where = `phases[${i}]`;
    const num = (k: string, required = true): number | undefined => {
      const v = p[k];
      if (v === undefined && !required) return undefined;
      if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) fail(`${where}.${k} must be a positive number`);
      return v as number;
    };
    const batch = num('batch_size')!;
    const accum = (p.grad_accum as number | undefined) ?? 1;
    if (!Number.isInteger(accum) || accum < 1 || batch % accum !== 0)
      fail(`${where}: batch_size ${batch} must be a multiple of grad_accum ${accum}`);
    if ((st === 'b' || st === 'c') && p.effnet_size === undefined)
      fail(`${where}.effnet_size is required for stage ${st}`);
    return {
      name: String(p.name ?? `phase-${i + 1}`),
      steps: num('steps')!,
      batch_size: batch,
      grad_accum: accum,
      image_size: num('image_size')!,
      effnet_size: num('effnet_size', false),
      aspect_ratios: p.aspect_ratios as number[] | undefined,
      bucket_multiple: (p.bucket_multiple as number | undefined) ?? 32,
      bucket_random_p: (p.bucket_random_p as number | undefined) ?? 0.05,
      random_crop: (p.random_crop as boolean | undefined) ?? true,
      resize: (p.resize as boolean | undefined) ?? true,
      hflip: (p.hflip as boolean | undefined) ?? false,
      lr: p.lr as number | undefined,
      freeze_effnet: p.freeze_effnet === undefined ? undefined : Boolean(p.freeze_effnet),
      compressor_only: p.compressor_only === undefined ? undefined : Boolean(p.compressor_only),
      note: p.note as string | undefined,
    };
  });
  const cfg: TrainConfig = {
    stage: st,
    name: String(raw.name ?? path.basename(file, '.json')),
    seed: (raw.seed as number | undefined) ?? 0,
    model: (raw.model as Record<string, unknown>) ?? {},
    init_from: resolvePath(raw.init_from),
    init_rules: parseInitRules(raw.init_rules, fail),
    text_encoder: resolvePath(raw.text_encoder),
    tokenizer: resolvePath(raw.tokenizer),
    effnet: raw.effnet
      ? { ...(raw.effnet as object), from: resolvePath((raw.effnet as Record<string, unknown>).from) }
      : undefined,
    vqgan: raw.vqgan
      ? { ...(raw.vqgan as object), from: resolvePath((raw.vqgan as Record<string, unknown>).from) }
      : undefined,
    discriminator: raw.discriminator
      ? { c_hidden: 512, depth: 6, lr: 3e-6, betas: [0.9, 0.999], weight_decay: 0.01, ...(raw.discriminator as object) }
      : st === 'a'
        ? { c_hidden: 512, depth: 6, lr: 3e-6, betas: [0.9, 0.999], weight_decay: 0.01 }
        : undefined,
    optimizer: { ...defs.optimizer, ...((raw.optimizer as object) ?? {}) } as OptimizerConfig,
    one_cycle:
      raw.one_cycle === null
        ? undefined
        : st === 'a'
          ? { pct_start: 0.1, div_factor: 25, final_div_factor: 1 / 25, ...((raw.one_cycle as object) ?? {}) }
          : (raw.one_cycle as TrainConfig['one_cycle']),
    ema:
      raw.ema === null
        ? null
        : raw.ema
          ? { ...(defs.ema ?? { every: 100, start: 5000, beta: 0.9 }), ...(raw.ema as object) }
          : defs.ema,
    objective: {
      t_sampler: (obj.t_sampler as 'dome') ?? 'dome',
      p2: obj.p2 === null ? null : { k: 1, gamma: 1, ...((obj.p2 as object) ?? {}) },
      weighting: (obj.weighting as 'p2') ?? 'p2',
      x0_weight_max: (obj.x0_weight_max as number) ?? 5,
      latent_scaling: (obj.latent_scaling as 'dome') ?? 'dome',
      caption_dropout: (obj.caption_dropout as number) ?? 0.05,
      caption_dropout_mode: (obj.caption_dropout_mode as 'batch') ?? 'batch',
      effnet_dropout: (obj.effnet_dropout as number) ?? 0.05,
      effnet_noise: (obj.effnet_noise as number) ?? 0.3,
      effnet_noise_tmax: (obj.effnet_noise_tmax as number) ?? 0.5,
      effnet_words: (obj.effnet_words as number) ?? 0,
      effnet_words_buckets: (obj.effnet_words_buckets as number) ?? 256,
      effnet_patches: (obj.effnet_patches as number) ?? 0,
      rec_weight: (obj.rec_weight as number) ?? 1.0,
      adv_weight: (obj.adv_weight as number) ?? 0.1,
      vq_weight: (obj.vq_weight as number) ?? 0.1,
      commitment: (obj.commitment as number) ?? 0.25,
      disc_start: (obj.disc_start as number) ?? 0,
      fit_scale_factor: (obj.fit_scale_factor as boolean) ?? false,
      quantize_p: (obj.quantize_p as number) ?? 1,
    },
    dropout: (raw.dropout as 'seeded' | 'off') ?? 'seeded',
    phases,
    checkpoint_every: (raw.checkpoint_every as number) ?? 2000,
    keep_checkpoints: (raw.keep_checkpoints as number) ?? 3,
    sample_every: (raw.sample_every as number) ?? 2000,
    sample_prompts: (raw.sample_prompts as string[]) ?? [
      'a photo of a dog',
      'an oil painting of a city at night',
      'a red bicycle',
      '',
    ],
    sample_steps: (raw.sample_steps as number) ?? 20,
    sample_cfg: (raw.sample_cfg as number) ?? 4,
    sample_images: (raw.sample_images as number) ?? 4,
    log_every: (raw.log_every as number) ?? 1,
    shuffle_buffer: (raw.shuffle_buffer as number) ?? 44,
    max_image_pixels: (raw.max_image_pixels as number) ?? DEFAULT_MAX_IMAGE_PIXELS,
    strict_data: (raw.strict_data as boolean) ?? false,
  };
  if (!Number.isSafeInteger(cfg.seed)) fail(`"seed" must be an integer, got ${JSON.stringify(raw.seed)}`);
  if (!['seeded', 'off'].includes(cfg.dropout)) fail(`"dropout" must be "seeded" or "off"`);
  if (!['dome', 'uniform', 'gdf'].includes(cfg.objective.t_sampler))
    fail(`objective.t_sampler must be dome, uniform or gdf`);
  if (!['p2', 'x0'].includes(cfg.objective.weighting)) fail(`objective.weighting must be "p2" or "x0"`);
  if (!(cfg.objective.x0_weight_max > 0)) fail(`objective.x0_weight_max must be positive`);
  const ls = cfg.objective.latent_scaling;
  if (!(
    ls === 'dome' ||
    ls === 'fit' ||
    (typeof ls === 'object' &&
      ls !== null &&
      Number.isFinite(ls.latent_mean) &&
      ls.latent_mean !== 0 &&
      Number.isFinite(ls.latent_std))
  )) {
    fail(`objective.latent_scaling must be "dome", "fit" or {"latent_mean": number ≠ 0, "latent_std": number}`);
  }
  if (!(Number.isFinite(cfg.objective.effnet_words) && cfg.objective.effnet_words >= 0))
    fail(`objective.effnet_words must be a weight ≥ 0, got ${JSON.stringify(obj.effnet_words)}`);
  if (!Number.isSafeInteger(cfg.objective.effnet_words_buckets) || cfg.objective.effnet_words_buckets < 1)
    fail(`objective.effnet_words_buckets must be a positive integer, got ${JSON.stringify(obj.effnet_words_buckets)}`);
  if (!(Number.isFinite(cfg.objective.effnet_patches) && cfg.objective.effnet_patches >= 0))
    fail(`objective.effnet_patches must be a weight ≥ 0, got ${JSON.stringify(obj.effnet_patches)}`);
  const firstDecoderPhase = cfg.phases.findIndex((ph) => !ph.compressor_only);
  const lateCompressor = cfg.phases.findIndex((ph, i) => ph.compressor_only && i > firstDecoderPhase);
  if (firstDecoderPhase >= 0 && lateCompressor >= 0)
    fail(
      `phase ${cfg.phases[lateCompressor].name}: "compressor_only" phases pretrain the compressor; they come before the decoder's phases`,
    );
  for (const p of cfg.phases.filter((ph) => ph.compressor_only)) {
    if (st !== 'b') fail(`phase ${p.name}: "compressor_only" is a Stage B phase option`);
    if (p.freeze_effnet) fail(`phase ${p.name}: "compressor_only" trains the compressor; it cannot also freeze it`);
    if (!(cfg.objective.effnet_words > 0 || cfg.objective.effnet_patches > 0))
      fail(
        `phase ${p.name}: "compressor_only" trains on the compressor's head losses; set objective.effnet_words or effnet_patches > 0`,
      );
  }
  if (!(cfg.checkpoint_every > 0)) fail('"checkpoint_every" must be positive');
  if (!Number.isSafeInteger(cfg.max_image_pixels) || cfg.max_image_pixels < 1)
    fail(`"max_image_pixels" must be a positive integer, got ${JSON.stringify(raw.max_image_pixels)}`);
  if (typeof cfg.strict_data !== 'boolean')
    fail(`"strict_data" must be true or false, got ${JSON.stringify(raw.strict_data)}`);
  if ((st === 'b' || st === 'c') && (!cfg.text_encoder || !cfg.tokenizer))
    fail(`stage ${st} needs "text_encoder" and "tokenizer" folders`);
  return cfg;
}

const INIT_KINDS = ['zeros', 'ones', 'normal', 'uniform', 'xavier', 'kaiming_fan_out'];

function parseInitRules(raw: unknown, fail: (d: string) => never): InitRule[] {
  if (raw === undefined) return [];
  if (!Array.isArray(raw)) fail('"init_rules" must be a list of {"match", "init", "scale"?}');
  return (raw as Record<string, unknown>[]).map((r, i) => {
    const init = r?.init as InitSpec | undefined;
    let match: RegExp;
    try {
      match = new RegExp(String(r?.match));
    } catch {
      return fail(`init_rules[${i}].match is not a valid regular expression`);
    }
    if (typeof r?.match !== 'string') fail(`init_rules[${i}].match must be a string`);
    if (init !== undefined && (typeof init !== 'object' || !INIT_KINDS.includes(init.kind)))
      fail(`init_rules[${i}].init.kind must be one of ${INIT_KINDS.join(', ')}`);
    if (r.scale !== undefined && !Number.isFinite(r.scale)) fail(`init_rules[${i}].scale must be a number`);
    return { match, init, scale: r.scale as number | undefined };
  });
}

/** The per-sample loss weighting an objective asks for. */
export function weightingOf(o: TrainConfig['objective']): LossWeighting {
  if (o.weighting === 'x0') return { kind: 'x0', max: o.x0_weight_max };
  return o.p2 ? { kind: 'p2', ...o.p2 } : { kind: 'none' };
}

/** Total updates over all phases. */
export function totalSteps(cfg: TrainConfig): number {
  return cfg.phases.reduce((a, p) => a + p.steps, 0);
}

/** The phase a 0-based update index falls in, and the index within it. */
export function phaseAt(cfg: TrainConfig, step: number): { index: number; phase: PhaseConfig; stepInPhase: number } {
  let start = 0;
  for (let i = 0; i < cfg.phases.length; i++) {
    const p = cfg.phases[i];
    if (step < start + p.steps) return { index: i, phase: p, stepInPhase: step - start };
    start += p.steps;
  }
  const last = cfg.phases.length - 1;
  return { index: last, phase: cfg.phases[last], stepInPhase: cfg.phases[last].steps };
}
