#!/usr/bin/env node
'use strict';
/**
 * Markdown tables from bench JSON lines (the stdout of `npm run bench`), for docs/perf.md:
 *   npm run bench -- --backend all --torch > results.jsonl
 *   node bench/table.js results.jsonl [more.jsonl …]      (later files win for the same name+backend)
 */
const fs = require('fs');

const files = process.argv.slice(2);
if (!files.length) {
  process.stderr.write('usage: node bench/table.js results.jsonl [more.jsonl …]\n');
  process.exit(1);
}
const byKey = new Map();
for (const f of files) {
  for (const line of fs.readFileSync(f, 'utf8').split('\n')) {
    if (!line.startsWith('{')) continue;
    const r = JSON.parse(line);
    byKey.set(`${r.name}|${r.backend}`, r);
  }
}
const records = [...byKey.values()];
const ORDER = ['cpu', 'wasm', 'native', 'torch'];
const backends = ORDER.filter((b) => records.some((r) => r.backend === b));
const vsTorch = backends.includes('torch') ? backends.filter((b) => b !== 'torch') : [];
const names = [...new Set(records.map((r) => r.name))];
const get = (n, b) => byKey.get(`${n}|${b}`);

const sec = (x) =>
  x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x >= 0.01 ? x.toFixed(3) : x.toFixed(4);
const gf = (x) => (x >= 10 ? x.toFixed(0) : x.toFixed(1));

const notes = [];
function note(text) {
  let i = notes.indexOf(text);
  if (i < 0) i = notes.push(text) - 1;
  return `[${i + 1}]`;
}

const out = [];
out.push(
  `| measurement | GFLOP | ${[...backends.map((b) => `${b} s (GFLOP/s)`), ...vsTorch.map((b) => `${b}/torch`)].join(' | ')} |`,
);
out.push(`|---|---:|${[...backends, ...vsTorch].map(() => '---:').join('|')}|`);
for (const n of names) {
  const any = backends.map((b) => get(n, b)).find((r) => r && r.work_gflop != null);
  const cells = backends.map((b) => {
    const r = get(n, b);
    if (!r) return '';
    if (r.skipped) return `skip ${note(`${n} on ${b}: ${r.skipped}`)}`;
    const load =
      r.other_load_cores != null && r.other_load_cores >= 0.3
        ? ` ${note(`${n} on ${b}: other processes used ${r.other_load_cores} cores on average while it ran`)}`
        : '';
    return `${sec(r.seconds)} (${r.gflops == null ? '–' : gf(r.gflops)}) n=${r.runs}${load}`;
  });
  const t = get(n, 'torch');
  const ratios = vsTorch.map((b) => {
    const r = get(n, b);
    if (!(r && t && r.seconds && t.seconds)) return '–';
    const q = r.seconds / t.seconds;
    return `${q >= 10 ? q.toFixed(0) : q.toFixed(2)}×`;
  });
  out.push(`| ${n} | ${any ? any.work_gflop.toPrecision(4) : '–'} | ${[...cells, ...ratios].join(' | ')} |`);
}
out.push('');
out.push(`| measurement | ${backends.map((b) => `${b} peak RSS MB`).join(' | ')} |`);
out.push(`|---|${backends.map(() => '---:').join('|')}|`);
for (const n of names) {
  out.push(
    `| ${n} | ${backends
      .map((b) => {
        const r = get(n, b);
        return !r ? '' : r.skipped ? 'skipped' : r.peak_rss_mb != null ? String(r.peak_rss_mb) : '–';
      })
      .join(' | ')} |`,
  );
}
if (notes.length) {
  out.push('');
  notes.forEach((t, i) => out.push(`[${i + 1}] ${t}  `));
}
process.stdout.write(out.join('\n') + '\n');
