/** The lines a training command prints when it ends: what happened, where the results are, how long it took. */
import * as fs from 'fs';
import * as path from 'path';
import { formatDuration } from '@wuerstchen/core/cli';
import { RunSummary } from './trainer';

const OUTCOME: Record<RunSummary['outcome'], (s: RunSummary, out: string) => string> = {
  finished: (s) => `finished: step ${s.step} of ${s.totalSteps}`,
  'already-finished': (s, out) =>
    `the run in ${out} is already finished (step ${s.step} of ${s.totalSteps}); nothing to train`,
  'max-steps': (s, out) =>
    `stopped at --max-steps: step ${s.step} of ${s.totalSteps} (continue with --resume --out ${out})`,
  stopped: (s, out) => `stopped at step ${s.step} of ${s.totalSteps} (continue with --resume --out ${out})`,
};

/** The summary of a run() of the trainer writing into `out`, for `program` (e.g. `wuerstchen-train`). */
export function describeRun(program: string, out: string, s: RunSummary): string {
  const trained = s.step - s.startStep;
  const lines = [
    `${program}: ${OUTCOME[s.outcome](s, out)}`,
    `  checkpoint  ${s.checkpoint}`,
    `  metrics     ${path.join(out, 'metrics.jsonl')}`,
  ];
  if (s.samples !== undefined) {
    const grids = fs.readdirSync(s.samples).filter((f) => f.endsWith('.png')).length;
    lines.push(`  samples     ${s.samples} (${grids} preview grid${grids === 1 ? '' : 's'})`);
  }
  const resumed = s.startStep > 0 ? ` (resumed at step ${s.startStep})` : '';
  lines.push(`  time        ${formatDuration(s.seconds)} for ${trained} step${trained === 1 ? '' : 's'}${resumed}`);
  return `${lines.join('\n')}\n`;
}
