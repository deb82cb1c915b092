/**
 * Progress reporting for the pipelines: each sampling stage reports after every step
 * `{stage, step, total, itPerSec, etaSeconds}`; the CLI renders these as a bar on a terminal and as
 * one plain line per stage otherwise.
 */

/** `prior` and `decoder` are the sampling loops (one step per model call, CFG included); `vqgan` is the final decode (1 step). */
export type ProgressStage = 'prior' | 'decoder' | 'vqgan';

export interface ProgressEvent {
  stage: ProgressStage;
  /** steps done so far: 0 when the stage starts, `total` when it ends. */
  step: number;
  total: number;
  /** steps per second over the stage so far (0 before the first step). */
  itPerSec: number;
  /** estimated seconds left in this stage (NaN before the first step). */
  etaSeconds: number;
  /** seconds since the stage started. */
  elapsedSeconds: number;
}

export type ProgressCallback = (event: ProgressEvent) => void;

const now = (): number => Number(process.hrtime.bigint()) / 1e9;

/** Times one stage and reports to `callback`: `start()` emits step 0, each `tick()` the next step. */
export class StageProgress {
  private started = 0;
  private done = 0;

  constructor(readonly stage: ProgressStage, readonly total: number, private readonly callback?: ProgressCallback) {}

  start(): void {
    this.started = now();
    this.done = 0;
    this.emit();
  }

  tick(): void {
    this.done++;
    this.emit();
  }

  private emit(): void {
    if (!this.callback) return;
    const elapsed = now() - this.started;
    const itPerSec = this.done > 0 && elapsed > 0 ? this.done / elapsed : 0;
    const etaSeconds = this.done > 0 ? (itPerSec > 0 ? (this.total - this.done) / itPerSec : 0) : NaN;
    this.callback({ stage: this.stage, step: this.done, total: this.total, itPerSec, etaSeconds, elapsedSeconds: elapsed });
  }
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

/** Steps per second as `12.3 it/s`, or `s/it` when slower than one step per second. */
export function formatRate(itPerSec: number): string {
  if (!(itPerSec > 0)) return '-- it/s';
  return itPerSec >= 1 ? `${itPerSec.toFixed(2)} it/s` : `${(1 / itPerSec).toFixed(2)} s/it`;
}

/** One bar line, e.g. `prior    [########----------------]  12/60  2.31 it/s  ETA 0:21`. */
export function formatBar(e: ProgressEvent, width = 24): string {
  const filled = e.total > 0 ? Math.round((width * e.step) / e.total) : width;
  const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
  const count = `${String(e.step).padStart(String(e.total).length)}/${e.total}`;
  const tail = e.step >= e.total ? `done in ${formatDuration(e.elapsedSeconds)}` : `ETA ${formatDuration(e.etaSeconds)}`;
  return `${e.stage.padEnd(8)} [${bar}] ${count}  ${formatRate(e.itPerSec)}  ${tail}`;
}

/** The line printed when a stage ends, without a terminal. */
export function formatStageDone(e: ProgressEvent): string {
  return `${e.stage}: ${e.total} step${e.total === 1 ? '' : 's'} in ${e.elapsedSeconds.toFixed(2)} s (${formatRate(e.itPerSec)})`;
}

export interface Writable {
  write(s: string): unknown;
}

/** A progress bar redrawn in place (`\r`), finished with a newline per stage: for a TTY. */
export function ttyProgress(stream: Writable): ProgressCallback {
  return (e) => {
    stream.write(`\r\x1b[2K${formatBar(e)}`);
    if (e.step >= e.total) stream.write('\n');
  };
}

/** One plain line per finished stage: for logs and pipes. */
export function plainProgress(stream: Writable): ProgressCallback {
  return (e) => {
    if (e.step >= e.total) stream.write(`${formatStageDone(e)}\n`);
  };
}
