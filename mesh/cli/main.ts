// `bun run mesh <command>`. Commands owned by other parts of the mesh (doctor, certs, ab, k8s) are
// listed and run only when their module is in this checkout, so --help never offers something that
// is not there. User mistakes exit 2 with one line and no stack trace; failures to start exit 1.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Command, CommanderError, Option } from "commander";
import { ConfigError } from "../config/index.ts";
import { TRANSPORT_CHOICES } from "../config/schema.ts";
import { StartupError, UserError } from "../supervisor/errors.ts";
import { RuntimeDirError } from "../supervisor/runtime-dir.ts";

type SubMain = (argv: string[]) => Promise<number>;

interface Delegated {
  name: string;
  summary: string;
  file: string;
  exportName: string;
}

/** Commands whose parsing and help belong to their own module; they get the raw arguments. */
const DELEGATED: Delegated[] = [
  { name: "doctor", summary: "check which transports this machine can use (rpal, shm, uds) and why", file: "./doctor.ts", exportName: "doctorMain" },
  { name: "certs", summary: "create a local CA and per-pod certificates for mTLS between sidecars", file: "../sidecar/certs.ts", exportName: "certsMain" },
  { name: "ab", summary: "A/B-compare transports under a fixed request rate (latency, CPU, memory)", file: "../ab/main.ts", exportName: "abMain" },
  { name: "k8s", summary: "render Kubernetes manifests for the pods in a mesh.yaml", file: "../k8s/main.ts", exportName: "k8sMain" },
];

const available = () => DELEGATED.filter((d) => existsSync(join(import.meta.dir, d.file)));

/** One line for the user: what went wrong and how to fix it (the errors already say both). */
function report(e: unknown): number {
  if (e instanceof ConfigError || e instanceof UserError || e instanceof RuntimeDirError) {
    process.stderr.write(`mesh: ${e.message}\n`);
    return 2;
  }
  if (e instanceof StartupError) {
    process.stderr.write(`mesh: ${e.message}\n`);
    return 1;
  }
  // A bug, not a user mistake: here the stack trace helps whoever reports it.
  process.stderr.write(`mesh: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return 1;
}

function buildProgram(delegated: Delegated[]): { program: Command; result: { code: number } } {
  const result = { code: 0 };
  const program = new Command("mesh")
    .description("rpal-mesh: run pods (an app next to its sidecar) and inspect them")
    .usage("<command> [options]")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({ outputError: (str, write) => write(`mesh: ${str.replace(/^error: /, "")}`) });

  program
    .command("up")
    .description("start every pod in a mesh.yaml (default examples/hello/mesh.yaml) and supervise them until Ctrl-C")
    .argument("[file]", "path of the mesh.yaml")
    .addOption(new Option("-t, --transport <name>", "app↔sidecar transport for every pod (overrides mesh.yaml and MESH_TRANSPORT)").choices(TRANSPORT_CHOICES))
    .option("--ready-timeout <seconds>", "how long a sidecar may take to become ready", "20")
    .option("--grace <seconds>", "how long processes get after SIGTERM (sidecars: plus drain_seconds) before SIGKILL", "5")
    .option("--logs", "also print every process's output, prefixed with pod/process")
    .action(async (file: string | undefined, flags) => {
      const { upMain } = await import("./up.ts");
      result.code = await upMain(file, flags);
    });

  program
    .command("status")
    .description("show the pods run by `mesh up` on this machine: pid, state, transport, ports, restarts")
    .option("--json", 'print {"pods":[{"name","processes":[{"role","pid","restarts","transport"}]}]}')
    .action(async (flags: { json?: boolean }) => {
      const { statusMain } = await import("./status.ts");
      result.code = await statusMain(flags);
    });

  for (const d of delegated) {
    // Listed for --help only; main() runs these before commander sees their arguments.
    program.command(d.name).description(d.summary).helpOption(false).allowUnknownOption().allowExcessArguments();
  }
  return { program, result };
}

export async function main(argv: string[]): Promise<number> {
  const delegated = available();
  const sub = delegated.find((d) => d.name === argv[0]);
  try {
    if (sub) {
      const mod = (await import(join(import.meta.dir, sub.file))) as Record<string, SubMain | undefined>;
      const fn = mod[sub.exportName];
      if (typeof fn !== "function") throw new Error(`${sub.file} does not export ${sub.exportName}`);
      return await fn(argv.slice(1));
    }
    const { program, result } = buildProgram(delegated);
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return 2;
    }
    await program.parseAsync(argv, { from: "user" });
    return result.code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version are not errors; everything else commander rejects is a usage mistake.
      return e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.exitCode === 0 ? 0 : 2;
    }
    return report(e);
  }
}

if (import.meta.main) {
  const code = await main(process.argv.slice(2));
  process.exit(code);
}
