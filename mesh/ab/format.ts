// Number formatting shared by the terminal progress, report.md and report.html, so the three agree.

export function fmtNum(v: number | null | undefined, digits = 3): string {
  if (v === null || v === undefined || !Number.isFinite(v)) return "–";
  if (v === 0) return "0";
  const abs = Math.abs(v);
  if (abs >= 1000) return Math.round(v).toLocaleString("en-US");
  return Number(v.toPrecision(digits)).toString();
}

export function fmtUs(us: number | null | undefined): string {
  if (us === null || us === undefined || !Number.isFinite(us)) return "–";
  if (us >= 1_000_000) return `${(us / 1_000_000).toPrecision(3)} s`;
  if (us >= 1000) return `${(us / 1000).toPrecision(3)} ms`;
  return `${Math.round(us)} µs`;
}

export function fmtPct(fraction: number | null | undefined): string {
  if (fraction === null || fraction === undefined || !Number.isFinite(fraction)) return "–";
  return `${(fraction * 100).toFixed(1)}%`;
}

export function fmtBytes(b: number): string {
  if (!Number.isFinite(b)) return "–";
  if (b >= 1024 * 1024) return `${(b / 1024 / 1024).toFixed(1)} MiB`;
  if (b >= 1024) return `${(b / 1024).toFixed(1)} KiB`;
  return `${b} B`;
}

/** "12.3% [4.1%, 20.5%]" or "12.3% (n=1, no interval)". */
export function fmtInterval(i: { mean: number; low: number | null; high: number | null; n: number }, f: (v: number) => string): string {
  if (i.low === null || i.high === null) return `${f(i.mean)} (n=${i.n}, no interval)`;
  return `${f(i.mean)} [${f(i.low)}, ${f(i.high)}]`;
}
