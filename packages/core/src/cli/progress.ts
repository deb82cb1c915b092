/**
 * The progress display of both command lines: on a terminal one bar redrawn in place (step, it/s, ETA); in a log
 * or a pipe plain lines, every `every` steps and when a task ends.
 */

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
}

/** `auto`: a bar on a terminal, plain lines otherwise; `none`: only `log()` lines. */
export type ProgressMode = 'auto' | 'plain' | 'none';
export const PROGRESS_MODES: readonly ProgressMode[] = ['auto', 'plain', 'none'];

export interface ProgressOptions {
  mode?: ProgressMode;
  /** in plain mode, a line every this many steps (default 0: only when a task ends). */
  every?: number;
  /** seconds on a monotonic clock (tests inject one). */
  clock?: () => number;
}

/** `m:ss` (or `h:mm:ss`); `--:--` when unknown. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${sec}` : `${m}:${sec}`;
}

/** Steps per second as `12.34 it/s`, or `s/it` when slower than one step per second. */
export function formatRate(itPerSec: number): string {
  if (!(itPerSec > 0)) return '-- it/s';
  return itPerSec >= 1 ? `${itPerSec.toFixed(2)} it/s` : `${(1 / itPerSec).toFixed(2)} s/it`;
}

const BAR_WIDTH = 24;
const monotonicSeconds = (): number => performance.now() / 1000;

export class ProgressBar {
  private readonly bar: boolean;
  private readonly plain: boolean;
  private readonly every: number;
  private readonly clock: () => number;
  private label = '';
  private total = 0;
  private firstStep = 0;
  private step = 0;
  private started = 0;
  /** a bar line is on screen and not yet ended with a newline. */
  private drawn = false;

  constructor(
    private readonly stream: ProgressStream,
    opts: ProgressOptions = {},
  ) {
    const mode = opts.mode ?? 'auto';
    this.bar = mode === 'auto' && Boolean(stream.isTTY);
    this.plain = mode === 'plain' || (mode === 'auto' && !this.bar);
    this.every = opts.every ?? 0;
    this.clock = opts.clock ?? monotonicSeconds;
  }

  /** Starts a task of `total` steps; a resumed one starts at `step` (its rate counts only the steps done here). */
  start(label: string, total: number, step = 0): void {
    this.label = label;
    this.total = total;
    this.firstStep = this.step = step;
    this.started = this.clock();
  }

  /** `step` steps of the task are done; `detail` (such as the loss) follows the ETA. */
  update(step: number, detail?: string): void {
    this.step = step;
    const { rate, eta } = this.speed();
    const count = `${String(step).padStart(String(this.total).length)}/${this.total}`;
    const tail = detail ? `  ${detail}` : '';
    if (this.bar) {
      const filled = this.total > 0 ? Math.min(BAR_WIDTH, Math.round((BAR_WIDTH * step) / this.total)) : BAR_WIDTH;
      const bar = '#'.repeat(filled) + '-'.repeat(BAR_WIDTH - filled);
      this.stream.write(
        `\r\x1b[2K${this.label.padEnd(8)} [${bar}] ${count}  ${formatRate(rate)}  ETA ${formatDuration(eta)}${tail}`,
      );
      this.drawn = true;
    } else if (this.plain && this.every > 0 && step % this.every === 0 && step < this.total) {
      this.stream.write(`${this.label}: step ${count}  ${formatRate(rate)}  ETA ${formatDuration(eta)}${tail}\n`);
    }
  }

  /** Prints a line without breaking the bar (it is redrawn by the next update). */
  log(line: string): void {
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
    this.stream.write(`${line}\n`);
  }

  /** Ends the task with a line saying how many steps took how long. */
  finish(): void {
    if (!this.bar && !this.plain) return;
    const { rate } = this.speed();
    const steps = this.step - this.firstStep;
    const elapsed = this.clock() - this.started;
    if (this.drawn) this.stream.write('\r\x1b[2K');
    this.drawn = false;
    this.stream.write(
      `${this.label}: ${steps} step${steps === 1 ? '' : 's'} in ${elapsed.toFixed(2)} s (${formatRate(rate)})\n`,
    );
  }

  private speed(): { rate: number; eta: number } {
    const elapsed = this.clock() - this.started;
    const rate = elapsed > 0 ? (this.step - this.firstStep) / elapsed : 0;
    return { rate, eta: rate > 0 ? (this.total - this.step) / rate : NaN };
  }
}
