// Terminal progress on stderr (stdout stays clean for the final summary). On a terminal the current
// run's line ticks its elapsed seconds in place; in a log or CI every event is a plain line.
import { fmtNum, fmtUs } from "./format.ts";
import type { RunRecord } from "./report-types.ts";

export class Progress {
  private timer: ReturnType<typeof setInterval> | undefined;
  private readonly tty: boolean;

  constructor(
    private readonly total: number,
    private readonly out: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = out.isTTY === true;
  }

  note(text: string): void {
    this.clear();
    this.out.write(`${text}\n`);
  }

  private label(index: number, text: string): string {
    const w = String(this.total).length;
    return `[${String(index).padStart(w)}/${this.total}] ${text}`;
  }

  startRun(index: number, text: string, expectedMs: number): void {
    const head = this.label(index, text);
    if (!this.tty) return;
    const t0 = Date.now();
    const draw = () => {
      const s = ((Date.now() - t0) / 1000).toFixed(0);
      this.out.write(`\r\x1b[2K${head} … ${s}/${Math.ceil(expectedMs / 1000)} s`);
    };
    draw();
    this.timer = setInterval(draw, 500);
  }

  endRun(index: number, text: string, r: RunRecord): void {
    this.clear();
    const line =
      `${this.label(index, text)}  ${fmtNum(r.achieved_rps)} rps  p50 ${fmtUs(r.latency_us.p50)}  p99 ${fmtUs(r.latency_us.p99)}  ` +
      `${fmtNum(r.vcpu_per_1000_rps)} vCPU/1k rps  errors ${r.errors}  ${r.ok ? "ok" : `FAILED: ${r.failure}`}`;
    this.out.write(`${line}\n`);
  }

  private clear(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    if (this.tty) this.out.write("\r\x1b[2K");
  }
}
