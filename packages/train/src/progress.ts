/** Progress display: a one-line bar on a TTY, plain log lines otherwise. */
export interface ProgressInfo {
  phase: string;
  step: number;
  total: number;
  /** omitted for work without a loss (data generation). */
  loss?: number;
  itPerSec: number;
  etaSec: number;
}

export function formatDuration(sec: number): string {
  if (!Number.isFinite(sec)) return '?';
  const s = Math.round(sec);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(r).padStart(2, '0')}s` : `${r}s`;
}

export class Progress {
  private lastLen = 0;
  constructor(
    private readonly stream: NodeJS.WriteStream | { write(s: string): boolean; isTTY?: boolean } = process.stderr,
    private readonly tty = Boolean((stream as NodeJS.WriteStream).isTTY),
    private readonly every = 1,
  ) {}

  update(p: ProgressInfo): void {
    if (this.every <= 0) return; // 'none'
    const frac = p.total > 0 ? p.step / p.total : 1;
    const stats = `[${p.phase}] step ${p.step}/${p.total}${p.loss === undefined ? '' : ` loss ${p.loss.toFixed(4)}`} ${p.itPerSec.toFixed(2)} it/s ETA ${formatDuration(p.etaSec)}`;
    if (this.tty) {
      const width = 24;
      const filled = Math.round(frac * width);
      const line = `${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${(frac * 100).toFixed(1)}% ${stats}`;
      this.stream.write(`\r${line}${' '.repeat(Math.max(0, this.lastLen - line.length))}`);
      this.lastLen = line.length;
    } else if (p.step % this.every === 0 || p.step === p.total) {
      this.stream.write(`${stats}\n`);
    }
  }

  /** Print a message without breaking the bar. */
  log(msg: string): void {
    if (this.tty && this.lastLen) {
      this.stream.write(`\r${' '.repeat(this.lastLen)}\r`);
      this.lastLen = 0;
    }
    this.stream.write(`${msg}\n`);
  }

  done(): void {
    if (this.tty && this.lastLen) this.stream.write('\n');
    this.lastLen = 0;
  }
}
