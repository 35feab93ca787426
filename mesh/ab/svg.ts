// Tiny inline-SVG chart renderer for report.html: a line chart with error bars over categorical x values
// and a grouped bar chart, both with linear or log y axes. Self-made because the report must open from
// disk with no server and no script, and the two chart kinds needed fit in a page of code.
// Every text that reaches the markup goes through esc().

export function esc(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

const W = 640;
const H = 340;
const M = { left: 70, right: 20, top: 36, bottom: 64 };
const PLOT_W = W - M.left - M.right;
const PLOT_H = H - M.top - M.bottom;

interface YScale {
  map(v: number): number;
  ticks: number[];
}

function niceStep(range: number, count: number): number {
  const raw = range / Math.max(1, count);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
}

function linearY(maxValue: number): YScale {
  const max = maxValue > 0 && Number.isFinite(maxValue) ? maxValue : 1;
  const step = niceStep(max, 5);
  const top = Math.ceil(max / step) * step;
  const ticks: number[] = [];
  for (let t = 0; t <= top + step / 2; t += step) ticks.push(Number(t.toPrecision(12)));
  return { map: (v) => M.top + PLOT_H - (Math.max(0, v) / top) * PLOT_H, ticks };
}

function logY(minValue: number, maxValue: number): YScale {
  const lo = 10 ** Math.floor(Math.log10(minValue > 0 && Number.isFinite(minValue) ? minValue : 1));
  let hi = 10 ** Math.ceil(Math.log10(maxValue > 0 && Number.isFinite(maxValue) ? maxValue : 10));
  if (hi <= lo) hi = lo * 10;
  const ticks: number[] = [];
  for (let d = lo; d <= hi; d *= 10) ticks.push(d);
  const span = Math.log10(hi) - Math.log10(lo);
  return { map: (v) => M.top + PLOT_H - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / span) * PLOT_H, ticks };
}

function frame(title: string, yLabel: string, xLabel: string, y: YScale, fmtTick: (v: number) => string): string[] {
  const parts: string[] = [];
  parts.push(`<text class="chart-title" x="${W / 2}" y="20" text-anchor="middle">${esc(title)}</text>`);
  for (const t of y.ticks) {
    const py = y.map(t).toFixed(1);
    parts.push(`<line class="grid" x1="${M.left}" x2="${W - M.right}" y1="${py}" y2="${py}"/>`);
    parts.push(`<text class="tick" x="${M.left - 6}" y="${py}" text-anchor="end" dominant-baseline="middle">${esc(fmtTick(t))}</text>`);
  }
  parts.push(`<line class="axis" x1="${M.left}" x2="${M.left}" y1="${M.top}" y2="${M.top + PLOT_H}"/>`);
  parts.push(`<line class="axis" x1="${M.left}" x2="${W - M.right}" y1="${M.top + PLOT_H}" y2="${M.top + PLOT_H}"/>`);
  parts.push(
    `<text class="axis-label" transform="translate(16 ${M.top + PLOT_H / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`,
    `<text class="axis-label" x="${M.left + PLOT_W / 2}" y="${H - 8}" text-anchor="middle">${esc(xLabel)}</text>`,
  );
  return parts;
}

function legend(entries: { name: string; color: string; dashed?: boolean }[]): string {
  let x = M.left;
  const y = H - 30;
  return entries
    .map((e) => {
      const s =
        `<line x1="${x}" x2="${x + 18}" y1="${y}" y2="${y}" stroke="${esc(e.color)}" stroke-width="3"${e.dashed ? ' stroke-dasharray="5 3"' : ""}/>` +
        `<text class="legend" x="${x + 22}" y="${y}" dominant-baseline="middle">${esc(e.name)}</text>`;
      x += 30 + e.name.length * 7;
      return s;
    })
    .join("");
}

export interface LinePoint {
  /** Index into the chart's categories. */
  x: number;
  y: number;
  low?: number | null;
  high?: number | null;
  tooltip: string;
}

export interface LineSeries {
  name: string;
  color: string;
  dashed?: boolean;
  points: LinePoint[];
}

export function lineChart(opts: {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  categories: string[];
  series: LineSeries[];
  log?: boolean;
  fmtTick?: (v: number) => string;
}): string {
  const values = opts.series.flatMap((s) => s.points.flatMap((p) => [p.y, p.high ?? p.y, p.low ?? p.y])).filter((v) => Number.isFinite(v));
  const y = opts.log ? logY(Math.min(...values.filter((v) => v > 0), Infinity), Math.max(...values, 0)) : linearY(Math.max(...values, 0));
  const fmt = opts.fmtTick ?? ((v: number) => String(Number(v.toPrecision(3))));
  const n = Math.max(1, opts.categories.length);
  const xAt = (i: number) => M.left + ((i + 0.5) / n) * PLOT_W;
  const parts = frame(opts.title, opts.yLabel, opts.xLabel, y, fmt);
  opts.categories.forEach((c, i) => {
    parts.push(`<text class="tick" x="${xAt(i).toFixed(1)}" y="${M.top + PLOT_H + 16}" text-anchor="middle">${esc(c)}</text>`);
  });
  // Series sit a few pixels apart so equal values (and their error bars) stay visible.
  const offset = (si: number) => (si - (opts.series.length - 1) / 2) * 7;
  opts.series.forEach((s, si) => {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    const px = (p: LinePoint) => (xAt(p.x) + offset(si)).toFixed(1);
    if (pts.length > 1) {
      const d = pts.map((p) => `${px(p)},${y.map(p.y).toFixed(1)}`).join(" ");
      parts.push(`<polyline class="series" fill="none" stroke="${esc(s.color)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""} points="${d}"/>`);
    }
    for (const p of pts) {
      const x = px(p);
      if (p.low != null && p.high != null && Number.isFinite(p.low) && Number.isFinite(p.high)) {
        parts.push(
          `<line class="errorbar" x1="${x}" x2="${x}" y1="${y.map(p.low).toFixed(1)}" y2="${y.map(p.high).toFixed(1)}" stroke="${esc(s.color)}"/>`,
        );
      }
      parts.push(`<circle class="point" cx="${x}" cy="${y.map(p.y).toFixed(1)}" r="4" fill="${esc(s.color)}"><title>${esc(p.tooltip)}</title></circle>`);
    }
  });
  parts.push(legend(opts.series));
  return `<svg class="chart" id="${esc(opts.id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(opts.title)}">${parts.join("")}</svg>`;
}

export interface BarSeries {
  name: string;
  color: string;
  /** One value per category (NaN = no bar). */
  values: number[];
  tooltips: string[];
}

export function barChart(opts: {
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  categories: string[];
  series: BarSeries[];
  log?: boolean;
  fmtTick?: (v: number) => string;
}): string {
  const values = opts.series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const y = opts.log ? logY(Math.min(...values.filter((v) => v > 0), Infinity), Math.max(...values, 0)) : linearY(Math.max(...values, 0));
  const fmt = opts.fmtTick ?? ((v: number) => String(Number(v.toPrecision(3))));
  const n = Math.max(1, opts.categories.length);
  const groupW = PLOT_W / n;
  const barW = (groupW * 0.8) / Math.max(1, opts.series.length);
  const parts = frame(opts.title, opts.yLabel, opts.xLabel, y, fmt);
  const baseY = M.top + PLOT_H;
  opts.categories.forEach((c, i) => {
    parts.push(`<text class="tick" x="${(M.left + (i + 0.5) * groupW).toFixed(1)}" y="${baseY + 16}" text-anchor="middle">${esc(c)}</text>`);
  });
  opts.series.forEach((s, si) => {
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      const x = M.left + i * groupW + groupW * 0.1 + si * barW;
      const top = y.map(v);
      parts.push(
        `<rect class="bar" x="${x.toFixed(1)}" y="${top.toFixed(1)}" width="${Math.max(1, barW - 2).toFixed(1)}" height="${Math.max(0.5, baseY - top).toFixed(1)}" fill="${esc(s.color)}"><title>${esc(s.tooltips[i] ?? "")}</title></rect>`,
      );
    });
  });
  parts.push(legend(opts.series));
  return `<svg class="chart" id="${esc(opts.id)}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${H}" width="${W}" height="${H}" role="img" aria-label="${esc(opts.title)}">${parts.join("")}</svg>`;
}
