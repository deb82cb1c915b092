/**
 * The procedural "shapes" world of the bundled tiny model: its caption grammar, a renderer and a
 * judge that reads the attributes back from pixels alone. Pure math (no Node APIs), so the data
 * writer, the evaluator, the tests and the web page share it.
 *
 * Caption: `a {size} {colour} {shape} {position} on a {background} background`.
 */
import { Generator } from './rng';

export type RGB = [number, number, number];

/** The palette (sRGB) of shape colours and backgrounds. */
export const PALETTE: Readonly<Record<string, RGB>> = {
  red: [220, 40, 40],
  orange: [245, 140, 30],
  yellow: [240, 215, 50],
  green: [40, 170, 70],
  blue: [40, 80, 220],
  purple: [140, 60, 190],
  white: [245, 245, 245],
  black: [20, 20, 20],
};
export const COLOURS = Object.keys(PALETTE);
/**
 * Colours outside the bundled model's world, for teaching it one (LoRA). They are drawn, rendered
 * and judged only where a caller names them; the defaults use PALETTE alone.
 */
export const EXTRA_PALETTE: Readonly<Record<string, RGB>> = {
  pink: [240, 130, 180],
};

/** sRGB of a colour of PALETTE or EXTRA_PALETTE. */
export function colourRGB(name: string): RGB {
  const c = PALETTE[name] ?? EXTRA_PALETTE[name];
  if (!c)
    throw new Error(`unknown colour "${name}" (known: ${[...COLOURS, ...Object.keys(EXTRA_PALETTE)].join(', ')})`);
  return c;
}
export const SHAPES = ['circle', 'square', 'triangle'] as const;
export const SIZES = ['small', 'large'] as const;
export const POSITIONS = ['on the left', 'on the right', 'at the top', 'at the bottom', 'in the middle'] as const;

export type Shape = (typeof SHAPES)[number];
export type Size = (typeof SIZES)[number];
export type Position = (typeof POSITIONS)[number];

/** Bounding-box side as a fraction of the image side. */
export const SIZE_FRACTION: Readonly<Record<Size, number>> = { small: 0.3, large: 0.55 };
/** Centre (x, y) as fractions of the image side. */
export const POSITION_CENTRE: Readonly<Record<Position, [number, number]>> = {
  'on the left': [0.25, 0.5],
  'on the right': [0.75, 0.5],
  'at the top': [0.5, 0.25],
  'at the bottom': [0.5, 0.75],
  'in the middle': [0.5, 0.5],
};

/** (colour, shape) pairs that never occur in the training data: they test composition. */
export const HELD_OUT_PAIRS: ReadonlyArray<readonly [string, Shape]> = [
  ['red', 'triangle'],
  ['green', 'square'],
  ['blue', 'circle'],
  ['yellow', 'triangle'],
  ['purple', 'circle'],
  ['white', 'square'],
];

export interface ShapeScene {
  size: Size;
  colour: string;
  shape: Shape;
  position: Position;
  background: string;
}

export function isHeldOut(colour: string, shape: Shape): boolean {
  return HELD_OUT_PAIRS.some(([c, s]) => c === colour && s === shape);
}

export function sceneCaption(s: ShapeScene): string {
  return `a ${s.size} ${s.colour} ${s.shape} ${s.position} on a ${s.background} background`;
}

const CAPTION_RE = new RegExp(
  `^a (${SIZES.join('|')}) (${COLOURS.join('|')}) (${SHAPES.join('|')}) (${POSITIONS.join('|')}) on a (${COLOURS.join('|')}) background$`,
);

/** The scene a caption of the grammar describes, or null when it does not follow the grammar. */
export function parseCaption(caption: string): ShapeScene | null {
  const m = CAPTION_RE.exec(caption.trim());
  if (!m || m[2] === m[5]) return null;
  return { size: m[1] as Size, colour: m[2], shape: m[3] as Shape, position: m[4] as Position, background: m[5] };
}

/**
 * A uniformly drawn scene; `heldOut` 'exclude' never draws a held-out pair, 'only' draws only those.
 * `colours` are the shape colours to draw from (default COLOURS; EXTRA_PALETTE names allowed); the
 * background is always a COLOURS one.
 */
export function randomScene(
  rng: Generator,
  heldOut: 'exclude' | 'only' | 'any' = 'exclude',
  colours: readonly string[] = COLOURS,
): ShapeScene {
  colours.forEach(colourRGB);
  if (heldOut === 'only' && !colours.some((c) => HELD_OUT_PAIRS.some(([h]) => h === c)))
    throw new Error(`no held-out pair has a colour among ${colours.join(', ')}`);
  for (;;) {
    const colour = colours[rng.int(colours.length)];
    const shape = SHAPES[rng.int(SHAPES.length)];
    const held = isHeldOut(colour, shape);
    if ((heldOut === 'exclude' && held) || (heldOut === 'only' && !held)) continue;
    let background: string;
    if (COLOURS.includes(colour)) {
      background = COLOURS[rng.int(COLOURS.length - 1)];
      if (background === colour) background = COLOURS[COLOURS.length - 1];
    } else background = COLOURS[rng.int(COLOURS.length)];
    return {
      size: SIZES[rng.int(SIZES.length)],
      colour,
      shape,
      position: POSITIONS[rng.int(POSITIONS.length)],
      background,
    };
  }
}

export interface RenderOptions {
  /** image side in pixels. */
  side: number;
  /** max centre jitter as a fraction of the side (default 0.05). */
  jitter?: number;
  /** max colour jitter per channel (default 8). */
  colourJitter?: number;
  /** supersampling per axis for the anti-aliased edges (default 4). */
  supersample?: number;
}

/** Is the point (u, v) (fractions of the side) inside the shape centred at (cx, cy) with box side b? */
function inside(shape: Shape, u: number, v: number, cx: number, cy: number, b: number): boolean {
  const dx = u - cx;
  const dy = v - cy;
  const h = b / 2;
  if (shape === 'square') return Math.abs(dx) <= h && Math.abs(dy) <= h;
  if (shape === 'circle') return dx * dx + dy * dy <= h * h;
  // upright triangle: apex at the top of the box, base at the bottom
  if (dy < -h || dy > h) return false;
  return Math.abs(dx) <= (dy + h) / 2;
}

/** Render a scene as 8-bit RGB (row-major HWC), with `rng` drawing the jitters. */
export function renderScene(scene: ShapeScene, rng: Generator, opts: RenderOptions): Uint8Array {
  const n = opts.side;
  const jitter = opts.jitter ?? 0.05;
  const cj = opts.colourJitter ?? 8;
  const ss = opts.supersample ?? 4;
  const [px, py] = POSITION_CENTRE[scene.position];
  const cx = px + (2 * rng.nextFloat() - 1) * jitter;
  const cy = py + (2 * rng.nextFloat() - 1) * jitter;
  const b = SIZE_FRACTION[scene.size];
  const tint = (c: RGB): RGB => c.map((v) => Math.min(255, Math.max(0, v + rng.int(2 * cj + 1) - cj))) as RGB;
  const fg = tint(colourRGB(scene.colour));
  const bg = tint(colourRGB(scene.background));
  const out = new Uint8Array(n * n * 3);
  for (let y = 0; y < n; y++) {
    for (let x = 0; x < n; x++) {
      let hits = 0;
      for (let sy = 0; sy < ss; sy++) {
        for (let sx = 0; sx < ss; sx++) {
          if (inside(scene.shape, (x + (sx + 0.5) / ss) / n, (y + (sy + 0.5) / ss) / n, cx, cy, b)) hits++;
        }
      }
      const a = hits / (ss * ss);
      const o = (y * n + x) * 3;
      for (let c = 0; c < 3; c++) out[o + c] = Math.round(a * fg[c] + (1 - a) * bg[c]);
    }
  }
  return out;
}

export interface Judgement {
  background: string;
  /** null when no foreground was found. */
  colour: string | null;
  shape: Shape | null;
  position: Position | null;
  size: Size | null;
  /** foreground pixels / all pixels. */
  coverage: number;
  /** foreground pixels / bounding-box area. */
  fill: number;
}

/** The name in `colours` (other than `exclude`) whose palette colour is nearest to `c`; the first on a tie. */
export function nearestColour(c: RGB, colours: readonly string[], exclude?: string): string {
  let best = '';
  let bestD = Infinity;
  for (const name of colours) {
    if (name === exclude) continue;
    const p = colourRGB(name);
    const d = (c[0] - p[0]) ** 2 + (c[1] - p[1]) ** 2 + (c[2] - p[2]) ** 2;
    if (d < bestD) {
      bestD = d;
      best = name;
    }
  }
  return best;
}

/**
 * Read a scene back from 8-bit RGB pixels (row-major HWC, `channels` 3 or 4):
 * background = nearest palette colour of the border's median; foreground = pixels farther than
 * `threshold` from the measured background; colour = nearest palette colour (other than the
 * background) of the foreground's median; shape = the fill ratio of the foreground in its bounding
 * box (square ≈ 1, circle ≈ π/4, triangle ≈ 1/2); position = the box centre, nearest of the five
 * anchors; size = the box's larger side against the midpoint of the two sizes. `colours` are the
 * names it chooses among (default COLOURS; add EXTRA_PALETTE names to judge a taught colour).
 */
export function judgeImage(
  pixels: Uint8Array,
  width: number,
  height: number,
  channels = 3,
  threshold = 40,
  colours: readonly string[] = COLOURS,
): Judgement {
  const at = (x: number, y: number, c: number) => pixels[(y * width + x) * channels + c];
  const median = (xs: number[]) => {
    const s = xs.slice().sort((a, b) => a - b);
    return s[s.length >> 1];
  };
  const border: number[][] = [[], [], []];
  for (let x = 0; x < width; x++)
    for (const y of [0, height - 1]) for (let c = 0; c < 3; c++) border[c].push(at(x, y, c));
  for (let y = 1; y < height - 1; y++)
    for (const x of [0, width - 1]) for (let c = 0; c < 3; c++) border[c].push(at(x, y, c));
  const bgRGB = border.map(median) as RGB;
  const background = nearestColour(bgRGB, colours);
  const rows = new Int32Array(height);
  const cols = new Int32Array(width);
  const fgVals: number[][] = [[], [], []];
  let count = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const d = Math.sqrt(
        (at(x, y, 0) - bgRGB[0]) ** 2 + (at(x, y, 1) - bgRGB[1]) ** 2 + (at(x, y, 2) - bgRGB[2]) ** 2,
      );
      if (d <= threshold) continue;
      rows[y]++;
      cols[x]++;
      count++;
      for (let c = 0; c < 3; c++) fgVals[c].push(at(x, y, c));
    }
  }
  const none: Judgement = { background, colour: null, shape: null, position: null, size: null, coverage: 0, fill: 0 };
  // a shape covers at least ~4% of the image (a small triangle); less is noise
  if (count < 0.02 * width * height) return { ...none, coverage: count / (width * height) };
  // the box spans rows/columns holding a real share of the mask (stray pixels do not stretch it)
  const span = (h: Int32Array) => {
    const min = Math.max(1, Math.round(0.08 * Math.max(...h)));
    let lo = 0;
    let hi = h.length - 1;
    while (lo < hi && h[lo] < min) lo++;
    while (hi > lo && h[hi] < min) hi--;
    return [lo, hi];
  };
  const [y0, y1] = span(rows);
  const [x0, x1] = span(cols);
  let inBox = 0;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const d = Math.sqrt(
        (at(x, y, 0) - bgRGB[0]) ** 2 + (at(x, y, 1) - bgRGB[1]) ** 2 + (at(x, y, 2) - bgRGB[2]) ** 2,
      );
      if (d > threshold) inBox++;
    }
  }
  const bw = x1 - x0 + 1;
  const bh = y1 - y0 + 1;
  const fill = inBox / (bw * bh);
  const colour = nearestColour(fgVals.map(median) as RGB, colours, background);
  // a shape clipped by the image edge loses part of its box; judge the fill on what is visible
  const shape: Shape = fill > 0.89 ? 'square' : fill > 0.64 ? 'circle' : 'triangle';
  const cx = (x0 + x1 + 1) / 2 / width;
  const cy = (y0 + y1 + 1) / 2 / height;
  let position: Position = 'in the middle';
  let bestD = Infinity;
  for (const p of POSITIONS) {
    const [ax, ay] = POSITION_CENTRE[p];
    const d = (cx - ax) ** 2 + (cy - ay) ** 2;
    if (d < bestD) {
      bestD = d;
      position = p;
    }
  }
  const extent = Math.max(bw / width, bh / height);
  const size: Size = extent > (SIZE_FRACTION.small + SIZE_FRACTION.large) / 2 ? 'large' : 'small';
  return { background, colour, shape, position, size, coverage: count / (width * height), fill };
}
