// `mesh doctor`: which transports can work on this machine, each precondition ✓/✗ with the reason and
// the fix, and what `auto` would pick. Read-only: nothing is created, no kernel interface is opened.
import { parseArgs } from "node:util";
import { localUnavailableReason } from "../../runtime/transport/negotiate.ts";
import { detectRpal, type Precondition } from "../../runtime/transport/rpal/detect.ts";
import type { TransportName } from "../../runtime/transport/types.ts";

export interface TransportReport {
  available: boolean;
  preconditions: Precondition[];
}

export interface DoctorReport {
  transports: Record<TransportName, TransportReport>;
  /** What `auto` would choose here, and why it skipped the faster ones. */
  auto: TransportName;
  autoSkipped: Partial<Record<TransportName, string>>;
}

export function doctorReport(): DoctorReport {
  const uds: TransportReport = {
    available: true,
    preconditions: [{ name: "unix sockets", ok: true, detail: "always available (also the control channel of every session)" }],
  };
  const shmReason = localUnavailableReason("shm");
  const shm: TransportReport = {
    available: !shmReason,
    preconditions: [
      shmReason
        ? { name: "shared memory", ok: false, detail: shmReason, fix: "use uds here, or run on Linux with /proc and memfd" }
        : { name: "shared memory", ok: true, detail: "memfd, mmap and /proc/<pid>/fd usable" },
    ],
  };
  const rpalDetection = detectRpal();
  const rpal: TransportReport = { available: rpalDetection.available, preconditions: rpalDetection.preconditions };
  const autoSkipped: Partial<Record<TransportName, string>> = {};
  let auto: TransportName = "uds";
  if (rpal.available) auto = "rpal";
  else {
    autoSkipped.rpal = rpalDetection.reason!;
    if (shm.available) auto = "shm";
    else autoSkipped.shm = shmReason!;
  }
  return { transports: { uds, shm, rpal }, auto, autoSkipped };
}

function formatText(r: DoctorReport): string {
  const lines: string[] = ["rpal-mesh doctor: transports on this machine", ""];
  for (const name of ["rpal", "shm", "uds"] as TransportName[]) {
    const t = r.transports[name];
    lines.push(`${name.padEnd(5)} ${t.available ? "✓ available" : "✗ unavailable"}`);
    for (const p of t.preconditions) {
      lines.push(`  ${p.ok ? "✓" : "✗"} ${p.name.padEnd(14)} ${p.detail}`);
      if (!p.ok && p.fix) lines.push(`  ${"".padEnd(16)} fix: ${p.fix}`);
    }
    lines.push("");
  }
  lines.push(`auto would pick: ${r.auto}`);
  for (const [name, why] of Object.entries(r.autoSkipped)) lines.push(`  skipped ${name}: ${why}`);
  return `${lines.join("\n")}\n`;
}

const USAGE = "usage: mesh doctor [--json]\n  --json  print the report as JSON\n";

/** Entry point wired as `bun run mesh doctor`. Returns the exit code. */
export async function doctorMain(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s)): Promise<number> {
  let values: { json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: argv, options: { json: { type: "boolean" }, help: { type: "boolean", short: "h" } }, strict: true }));
  } catch (e) {
    process.stderr.write(`mesh doctor: ${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    out(USAGE);
    return 0;
  }
  const report = doctorReport();
  out(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatText(report));
  return 0;
}

if (import.meta.main) process.exit(await doctorMain(process.argv.slice(2)));
