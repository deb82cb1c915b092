/** Data layer of @wuerstchen/train: tar streaming, decoding, transforms, datasets, determinism, warnings. */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Generator } from 'wuerstchen';
import { DatasetError, ImageTextDataset } from '@wuerstchen/train';
import {
  TarReader,
  centerCrop,
  decodeImage,
  encodeToy,
  expandBraces,
  hflip,
  makeToyDataset,
  makeToyShards,
  normalize,
  resize,
  resizeShortSide,
  splitWdsName,
  toyImage,
  wdsSamples,
  writeTar,
} from '@wuerstchen/train/internal';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'train-data-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
const quiet = () => undefined;

describe('tar reader', () => {
  test('streams entries, long names and groups WebDataset samples', () => {
    const long = `${'d'.repeat(60)}/${'x'.repeat(70)}.txt`;
    const file = path.join(tmp, 'a.tar');
    writeTar(file, [
      ['s1.png', Buffer.from('png1')],
      ['s1.txt', Buffer.from('cap1')],
      ['s2.jpg', Buffer.from('jpg2')],
      ['s2.json', Buffer.from('{"caption":"cap2"}')],
      ['s2.cls', Buffer.from('7')],
      [long, Buffer.from('long')],
    ]);
    const r = new TarReader(file);
    const entries = [...r.entries()];
    expect(entries.map((e) => e.name)).toEqual(['s1.png', 's1.txt', 's2.jpg', 's2.json', 's2.cls', long]);
    expect(r.read(entries[1]).toString()).toBe('cap1');
    const samples = [...wdsSamples(r, new Set(['png', 'jpg', 'txt', 'json']))];
    expect(samples.map((s) => s.key)).toEqual(['s1', 's2', long.slice(0, -4)]);
    expect([...samples[1].files.keys()]).toEqual(['jpg', 'json']); // .cls not read
    r.close();
    expect(splitWdsName('dir/a.b.seg.png')).toEqual({ key: 'dir/a', ext: 'b.seg.png' });
  });

  test('a corrupt or truncated shard is an error naming the file', () => {
    const file = path.join(tmp, 'bad.tar');
    fs.writeFileSync(file, Buffer.alloc(1024, 7));
    expect(() => [...new TarReader(file).entries()]).toThrow(/bad\.tar.*checksum/);
  });

  test('brace expansion', () => {
    expect(expandBraces('s-{000..002}.tar')).toEqual(['s-000.tar', 's-001.tar', 's-002.tar']);
    expect(expandBraces('{a,b}-{1..2}')).toEqual(['a-1', 'a-2', 'b-1', 'b-2']);
  });
});

describe('images', () => {
  test('PNG and JPEG decode to RGB in [0, 1]', () => {
    const img = toyImage(0, 0, [20, 10]);
    const png = decodeImage(encodeToy(img, 'png'));
    expect([png.width, png.height]).toEqual([20, 10]);
    expect(png.data[0]).toBeCloseTo(img.rgba[0] / 255, 6);
    const jpg = decodeImage(encodeToy(img, 'jpg'));
    expect([jpg.width, jpg.height]).toEqual([20, 10]);
    expect(Math.abs(jpg.data[0] - png.data[0])).toBeLessThan(0.08);
    expect(() => decodeImage(Buffer.from('nope'))).toThrow(/not a PNG or JPEG/);
  });

  test('resize (antialiased bilinear), short-side resize, crops, flip, normalise', () => {
    const data = new Float32Array(4 * 2 * 3);
    for (let i = 0; i < 8; i++) data.fill(i / 8, i * 3, i * 3 + 3);
    const img = { width: 4, height: 2, data };
    const half = resize(img, 2, 1);
    // 2x downscale with the triangle filter of support 2: weights (1/8, 3/8, 3/8, 1/8) clipped at the border
    expect(half.data[0]).toBeCloseTo(((0 * 3 + 1 * 3 + 2 * 1) / 7 + (4 * 3 + 5 * 3 + 6 * 1) / 7) / 2 / 8, 5);
    const s = resizeShortSide({ width: 10, height: 5, data: new Float32Array(150).fill(0.5) }, 4);
    expect([s.width, s.height]).toEqual([8, 4]);
    expect(s.data.every((v) => Math.abs(v - 0.5) < 1e-6)).toBe(true);
    const c = centerCrop({ width: 5, height: 3, data: Float32Array.from({ length: 45 }, (_, i) => i) }, 3, 1);
    expect(Array.from(c.data.slice(0, 3))).toEqual([18, 19, 20]); // row 1, column 1
    expect(Array.from(hflip(img).data.slice(0, 3))).toEqual(Array.from(data.slice(9, 12)));
    const n = normalize({ width: 1, height: 1, data: Float32Array.from([0.485, 0.456, 0.406]) });
    expect(Array.from(n.data).every((v) => Math.abs(v) < 1e-6)).toBe(true);
  });
});

describe('datasets', () => {
  const folder = path.join(tmp, 'folder');
  beforeAll(() => makeToyDataset(folder, 6, { jpegEvery: 3, withBroken: true }));

  test('folder: same-named captions, counted warnings, seeded order', () => {
    const logs: string[] = [];
    const ds = new ImageTextDataset(folder, { seed: 3, log: (l) => logs.push(l) });
    expect(ds.warnings.missingCaption).toBe(1);
    const seen = Array.from({ length: 14 }, () => ds.next());
    expect(ds.warnings.unreadable).toBe(1); // counted once although visited twice
    expect(logs.some((l) => /broken\.png.*unreadable/.test(l))).toBe(true);
    expect(seen[0].caption).toMatch(/^a (red|green|blue|yellow) (square|circle|stripe)$/);
    const again = new ImageTextDataset(folder, { seed: 3, log: quiet });
    expect(Array.from({ length: 14 }, () => again.next().id)).toEqual(seen.map((s) => s.id));
    const other = new ImageTextDataset(folder, { seed: 4, log: quiet });
    expect(Array.from({ length: 6 }, () => other.next().id)).not.toEqual(seen.slice(0, 6).map((s) => s.id));
  });

  test('position restores the stream exactly', () => {
    const a = new ImageTextDataset(folder, { seed: 9, log: quiet });
    for (let i = 0; i < 5; i++) a.next();
    const st = a.state();
    const next = Array.from({ length: 9 }, () => a.next());
    const b = new ImageTextDataset(folder, { seed: 9, log: quiet });
    b.restore(JSON.parse(JSON.stringify(st)));
    const resumed = Array.from({ length: 9 }, () => b.next());
    expect(resumed.map((s) => s.id)).toEqual(next.map((s) => s.id));
    expect(resumed.map((s) => s.rng.nextFloat())).toEqual(next.map((s) => s.rng.nextFloat()));
  });

  test('JSONL manifest with caption lists', () => {
    const file = path.join(tmp, 'manifest.jsonl');
    fs.writeFileSync(
      file,
      [
        JSON.stringify({ file_name: 'folder/img0000.png', text: ['one', 'two'] }),
        JSON.stringify({ image: 'folder/img0001.png', caption: 'three' }),
        JSON.stringify({ file_name: 'folder/missing.png', text: 'gone' }),
        JSON.stringify({ file_name: 'folder/img0002.jpg' }),
        '{not json',
      ].join('\n'),
    );
    const ds = new ImageTextDataset(file, { seed: 1, log: quiet });
    const caps = new Set(Array.from({ length: 12 }, () => ds.next().caption));
    expect([...caps].every((c) => ['one', 'two', 'three'].includes(c))).toBe(true);
    expect(ds.warnings.unreadable).toBe(1);
    expect(ds.warnings.missingCaption).toBe(1);
    expect(ds.warnings.malformed).toBe(1);
  });

  test('WebDataset shards stream with a seeded buffer and resume mid-shard', () => {
    const dir = path.join(tmp, 'shards');
    makeToyShards(dir, 3, 5, { jpegEvery: 4 });
    const a = new ImageTextDataset(dir, { seed: 5, shuffleBuffer: 3, log: quiet });
    const first = Array.from({ length: 15 }, () => a.next().id);
    expect(new Set(first).size).toBe(15); // one epoch visits every sample once
    const b = new ImageTextDataset(path.join(dir, 'shard-{000..002}.tar'), { seed: 5, shuffleBuffer: 3, log: quiet });
    for (let i = 0; i < 7; i++) b.next();
    const st = b.state();
    const rest = Array.from({ length: 12 }, () => b.next().id);
    const c = new ImageTextDataset(path.join(dir, 'shard-{000..002}.tar'), { seed: 5, shuffleBuffer: 3, log: quiet });
    c.restore(st);
    expect(Array.from({ length: 12 }, () => c.next().id)).toEqual(rest);
  });

  test('nothing usable is an error naming the source', () => {
    const empty = path.join(tmp, 'empty');
    fs.mkdirSync(empty);
    fs.writeFileSync(path.join(empty, 'a.png'), encodeToy(toyImage(1), 'png'));
    expect(() => new ImageTextDataset(empty, { seed: 0 })).toThrow(DatasetError);
    expect(() => new ImageTextDataset(empty, { seed: 0 })).toThrow(/empty.*nothing usable/);
    const broken = path.join(tmp, 'broken');
    fs.mkdirSync(broken);
    fs.writeFileSync(path.join(broken, 'a.png'), 'x');
    fs.writeFileSync(path.join(broken, 'a.txt'), 'cap');
    const ds = new ImageTextDataset(broken, { seed: 0, log: quiet });
    expect(() => ds.next()).toThrow(/broken.*nothing usable/);
    expect(() => new ImageTextDataset(path.join(tmp, 'nope'), { seed: 0 })).toThrow(/nope does not exist/);
    const tarDir = path.join(tmp, 'tars');
    fs.mkdirSync(tarDir);
    writeTar(path.join(tarDir, 'x.tar'), [
      ['a.png', Buffer.from('bad')],
      ['a.txt', Buffer.from('c')],
    ]);
    const wds = new ImageTextDataset(tarDir, { seed: 0, log: quiet });
    expect(() => wds.next()).toThrow(/WebDataset.*tars.*nothing usable/);
  });

  test('Generator.int is uniform, permutation permutes; both replay from state()', () => {
    const g = new Generator(42);
    const counts = new Array<number>(6).fill(0);
    for (let i = 0; i < 60000; i++) counts[g.int(6)]++;
    for (const c of counts) expect(Math.abs(c - 10000)).toBeLessThan(400); // σ ≈ 91
    // n = 3·2³⁰ rejects a quarter of the outputs; n = 2³² takes every output as is
    for (let i = 0; i < 100; i++) expect(g.int(3 * 2 ** 30)).toBeLessThan(3 * 2 ** 30);
    const before = g.state();
    expect(g.int(2 ** 32)).toBe(Generator.fromState(before).nextUint32());
    expect(() => g.int(0)).toThrow(/Generator\.int/);
    expect(() => g.int(2.5)).toThrow(/Generator\.int/);
    const p = g.permutation(50);
    expect([...p].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(p).not.toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(g.permutation(0)).toEqual([]);
    const s = g.state();
    const next = [g.permutation(20), g.int(1000), g.randnArray(3)];
    const h = new Generator(0).setState(s);
    expect([h.permutation(20), h.int(1000), h.randnArray(3)]).toEqual(next);
  });
});
