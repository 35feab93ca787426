// `bun run bench`: runs the C references and the Bun rows in the same run and prints a table with
// each Bun figure's ratio to the C reference, CPU time of both processes included. `-- --json`
// prints only a JSON array of rows (see lib/rows.ts for the fields). Timings live here, never in tests.
import { parseBenchArgs, selected, UsageError, USAGE } from "./lib/args.ts";
import { runBunRows } from "./lib/bun-rows.ts";
import { runCReferences } from "./lib/c-refs.ts";
import { runMicro } from "./lib/micro.ts";
import { attachRatios, type BenchRow } from "./lib/rows.ts";
import { renderTable } from "./lib/table.ts";
import { checkTargets, renderTargets } from "./lib/targets.ts";
import { readFileSync } from "node:fs";
import { availableParallelism } from "node:os";

function loadAvg1m(): number | undefined {
  try {
    return Number(readFileSync("/proc/loadavg", "utf8").split(" ")[0]);
  } catch {
    return undefined;
  }
}

async function main(): Promise<number> {
  // `bun run bench -- --json` hands the script a literal "--" on some Bun versions.
  const argv = Bun.argv.slice(2).filter((a, i) => !(i === 0 && a === "--"));
  let opts;
  try {
    const parsed = parseBenchArgs(argv);
    if (parsed === "help") {
      console.log(USAGE);
      return 0;
    }
    opts = parsed;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(e.message);
      return 2;
    }
    throw e;
  }

  const rows: BenchRow[] = [];
  const problems: string[] = [];
  const progress = (msg: string) => console.error(`bench: ${msg}`);
  const onRow = (r: BenchRow) => {
    const load = loadAvg1m();
    if (load !== undefined) r.load_avg_1m = load;
    rows.push(r);
    progress(`${r.name} [${r.transport} ${r.mode}] done`);
  };
  const started = performance.now();

  try {
    await runCReferences(opts, onRow);
  } catch (e) {
    problems.push(`C references: ${(e as Error).message}`);
  }
  if (selected(opts, "micro")) {
    try {
      problems.push(...(await runMicro(opts.quick, onRow)));
    } catch (e) {
      problems.push(`microbenchmarks: ${(e as Error).message}`);
    }
  }
  // A variant that hung or crashed fails the run (exit 1): a lost wake-up must not pass as a note.
  const failures: string[] = [];
  try {
    const bun = await runBunRows(opts, onRow);
    problems.push(...bun.notes);
    failures.push(...bun.failures);
  } catch (e) {
    failures.push(`Bun rows: ${(e as Error).message}`);
  }

  attachRatios(rows);
  const cpus = availableParallelism();
  const maxLoad = Math.max(0, ...rows.map((r) => r.load_avg_1m ?? 0));
  if (maxLoad > cpus * 0.75) {
    problems.push(`the machine was busy with other work (1-min load average up to ${maxLoad} on ${cpus} CPUs): figures are noisy, re-run on a quiet machine before quoting them`);
  }
  for (const p of problems) console.error(`bench: note — ${p}`);
  for (const f of failures) console.error(`bench: FAILED — ${f}`);
  if (opts.json) {
    console.log(JSON.stringify(rows, null, 1));
  } else {
    console.log(renderTable(rows));
    if (rows.some((r) => !r.transport.startsWith("c-") && r.mode !== "micro")) {
      console.log(`\nIssue targets (this run):\n${renderTargets(checkTargets(rows))}`);
    }
    console.log(`\n${rows.length} rows in ${((performance.now() - started) / 1000).toFixed(1)} s; ratios are this row ÷ the C reference of the same run (lat = median, or mean cycles for one-way).`);
  }
  return rows.length > 0 && failures.length === 0 ? 0 : 1;
}

process.exit(await main());
