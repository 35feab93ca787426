// `bun run bench`: runs the C references and the Bun rows in the same run and prints a table with
// each Bun figure's ratio to the C reference, CPU time of both processes included. `-- --json`
// prints only a JSON array of rows (see lib/rows.ts for the fields). Timings live here, never in tests.
import { parseBenchArgs, selected, UsageError, USAGE } from "./lib/args.ts";
import { runBunRows } from "./lib/bun-rows.ts";
import { runCReferences } from "./lib/c-refs.ts";
import { runMicro } from "./lib/micro.ts";
import { attachRatios, type BenchRow } from "./lib/rows.ts";
import { renderTable } from "./lib/table.ts";

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
  try {
    problems.push(...(await runBunRows(opts, onRow)));
  } catch (e) {
    problems.push(`Bun rows: ${(e as Error).message}`);
  }

  attachRatios(rows);
  for (const p of problems) console.error(`bench: skipped or failed — ${p}`);
  if (opts.json) {
    console.log(JSON.stringify(rows, null, 1));
  } else {
    console.log(renderTable(rows));
    console.log(`\n${rows.length} rows in ${((performance.now() - started) / 1000).toFixed(1)} s; ratios are this row ÷ the C reference of the same run (lat = median, or mean cycles for one-way).`);
  }
  return rows.length > 0 ? 0 : 1;
}

process.exit(await main());
