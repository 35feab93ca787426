// Writes report.json, report.md and report.html into the output directory (created 0755 if missing:
// reports are meant to be shared, unlike sockets and segments).
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { renderHtml } from "./report-html.ts";
import { renderMarkdown } from "./report-md.ts";
import type { AbReport } from "./report-types.ts";

export interface WrittenReport {
  json: string;
  md: string;
  html: string;
}

/** Writes to a temporary name and renames, so a reader never sees half a report. */
function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

export function writeReport(outDir: string, report: AbReport): WrittenReport {
  try {
    mkdirSync(outDir, { recursive: true });
  } catch (e) {
    throw new Error(`cannot create the report directory ${outDir}: ${(e as Error).message}; pass --out with a writable directory`);
  }
  const paths = { json: join(outDir, "report.json"), md: join(outDir, "report.md"), html: join(outDir, "report.html") };
  // NaN (a group with no successful run) becomes null in JSON, which is what a reader should see.
  writeAtomic(paths.json, `${JSON.stringify(report, null, 2)}\n`);
  writeAtomic(paths.md, renderMarkdown(report));
  writeAtomic(paths.html, renderHtml(report));
  return paths;
}
