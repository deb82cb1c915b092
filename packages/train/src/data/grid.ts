/**
 * Preview grids: rows of images, each row under its label and each image over its caption (the prompt that drew
 * it), scaled up by a whole factor until the grid is at least MIN_GRID_WIDTH pixels wide.
 */
import { CHAR_HEIGHT, CHAR_WIDTH, drawText, wrapText } from './font';
import { RGBImage, upscaleNearest } from './image';

export interface GridRow {
  /** drawn above the row, e.g. "decoder samples". */
  label: string;
  images: RGBImage[];
  /** drawn below each image, e.g. its prompt. */
  captions?: string[];
}

export const MIN_GRID_WIDTH = 512;
const PAD = 4;
/** Longer captions are cut, so that one long prompt does not make every row tall. */
const MAX_CAPTION_LINES = 4;
const INK: [number, number, number] = [0, 0, 0];

/** The caption's lines in a cell `chars` characters wide, at most MAX_CAPTION_LINES (the last one marked when cut). */
function captionLines(caption: string, chars: number): string[] {
  const lines = wrapText(caption, chars);
  if (lines.length <= MAX_CAPTION_LINES) return lines;
  const kept = lines.slice(0, MAX_CAPTION_LINES);
  kept[MAX_CAPTION_LINES - 1] = `${kept[MAX_CAPTION_LINES - 1].slice(0, Math.max(0, chars - 3))}...`;
  return kept;
}

/** The grid of `rows` on white (columns line up across rows; images sit at the top left of their cells). */
export function makeGrid(rows: GridRow[], minWidth = MIN_GRID_WIDTH): RGBImage {
  const images = rows.flatMap((r) => r.images);
  const cols = Math.max(...rows.map((r) => r.images.length));
  const baseW = Math.max(...images.map((i) => i.width));
  const baseH = Math.max(...images.map((i) => i.height));
  const scale = Math.max(1, Math.ceil((minWidth - (cols + 1) * PAD) / (cols * baseW)));
  const [cellW, cellH] = [baseW * scale, baseH * scale];
  const width = cols * cellW + (cols + 1) * PAD;
  const cellChars = Math.max(1, Math.floor(cellW / CHAR_WIDTH));
  const layout = rows.map((row) => {
    const label = wrapText(row.label, Math.floor((width - 2 * PAD) / CHAR_WIDTH));
    const captions = (row.captions ?? []).map((c) => captionLines(c, cellChars));
    const captionHeight = Math.max(0, ...captions.map((c) => c.length)) * CHAR_HEIGHT;
    const height = label.length * CHAR_HEIGHT + PAD + cellH + (captionHeight ? PAD + captionHeight : 0) + PAD;
    return { row, label, captions, height };
  });
  const height = PAD + layout.reduce((sum, r) => sum + r.height, 0);
  const grid: RGBImage = { width, height, data: new Float32Array(width * height * 3).fill(1) };
  let y = PAD;
  for (const { row, label, captions, height: rowHeight } of layout) {
    label.forEach((line, i) => drawText(grid, PAD, y + i * CHAR_HEIGHT, line, INK));
    const top = y + label.length * CHAR_HEIGHT + PAD;
    row.images.forEach((img, c) => {
      const x0 = PAD + c * (cellW + PAD);
      const big = scale === 1 ? img : upscaleNearest(img, scale);
      for (let r = 0; r < big.height; r++)
        grid.data.set(big.data.subarray(r * big.width * 3, (r + 1) * big.width * 3), ((top + r) * width + x0) * 3);
      captions[c]?.forEach((line, i) => drawText(grid, x0, top + cellH + PAD + i * CHAR_HEIGHT, line, INK));
    });
    y += rowHeight;
  }
  return grid;
}
