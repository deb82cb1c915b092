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

/** Seconds on a monotonic clock (`performance` exists in Node and in browsers). */
const now = (): number => performance.now() / 1e3;

/** Times one stage and reports to `callback`: `start()` emits step 0, each `tick()` the next step. */
export class StageProgress {
  private started = 0;
  private done = 0;

  constructor(
    readonly stage: ProgressStage,
    readonly total: number,
    private readonly callback?: ProgressCallback,
  ) {}

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
    this.callback({
      stage: this.stage,
      step: this.done,
      total: this.total,
      itPerSec,
      etaSeconds,
      elapsedSeconds: elapsed,
    });
  }
}
