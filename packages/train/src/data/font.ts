/**
 * A 5×7 bitmap font for printed ASCII (the classic HD44780-style glyphs), to write labels into preview PNGs
 * without font files. Each glyph is 5 columns, one byte each, bit 0 the top row; characters outside
 * ' '..'~' are drawn as '?'.
 */
import { RGBImage } from './image';

const GLYPHS =
  '000000000000005f00000007000700147f147f14242a7f2a12231308646236495522500005030000001c2241000041221c00' +
  '082a1c2a0808083e080800503000000808080808006060000020100804023e5149453e00427f400042615149462141454b31' +
  '1814127f1027454545393c4a49493001710905033649494936064949291e0036360000005636000000081422411414141414' +
  '41221408000201510906324979413e7e1111117e7f494949363e414141227f4141221c7f494949417f090901013e41415132' +
  '7f0808087f00417f41002040413f017f081422417f404040407f0204027f7f0408107f3e4141413e7f090909063e4151215e' +
  '7f09192946464949493101017f01013f4040403f1f2040201f7f2018207f63140814630304780403615149454300007f4141' +
  '020408102041417f000004020102044040404040000102040020545454787f484444383844444420384444487f3854545418' +
  '087e090102081454543c7f0804047800447d40002040443d00007f10284400417f40007c041804787c080404783844444438' +
  '7c14141408081414187c7c080404084854545420043f4440203c4040207c1c2040201c3c4030403c44281028440c5050503c' +
  '4464544c44000836410000007f000000413608000201020402';

const FIRST = 0x20;
const LAST = 0x7e;
/** Pixels per character cell: 5 columns of ink and one of space; 7 rows and one of space. */
export const CHAR_WIDTH = 6;
export const CHAR_HEIGHT = 8;

function glyph(ch: string): number[] {
  let code = ch.charCodeAt(0);
  if (code < FIRST || code > LAST) code = '?'.charCodeAt(0);
  const at = (code - FIRST) * 10;
  return Array.from({ length: 5 }, (_, i) => parseInt(GLYPHS.slice(at + 2 * i, at + 2 * i + 2), 16));
}

/** Draws `text` with its top-left corner at (x, y) in `colour` (RGB in [0, 1]), clipped to the image. */
export function drawText(img: RGBImage, x: number, y: number, text: string, colour: [number, number, number]): void {
  [...text].forEach((ch, i) => {
    glyph(ch).forEach((bits, col) => {
      for (let row = 0; row < 7; row++) {
        const px = x + i * CHAR_WIDTH + col;
        const py = y + row;
        if (!(bits & (1 << row)) || px < 0 || py < 0 || px >= img.width || py >= img.height) continue;
        img.data.set(colour, (py * img.width + px) * 3);
      }
    });
  });
}

/** `text` broken at spaces into lines of at most `width` characters (longer words are cut). */
export function wrapText(text: string, width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(/\s+/).filter(Boolean)) {
    for (let w = word; w.length > 0; w = w.slice(width)) {
      const piece = w.slice(0, width);
      if (line && line.length + 1 + piece.length <= width) line += ` ${piece}`;
      else {
        if (line) lines.push(line);
        line = piece;
      }
    }
  }
  if (line) lines.push(line);
  return lines;
}
