// The sidecar process: `bun mesh/sidecar/main.ts --config <mesh.yaml> --pod <name> --app-socket <path>
// [--transport auto|uds|shm|rpal]`. Prints one JSON "ready" line on stdout once listening; logs go to
// stderr. SIGTERM/SIGINT drain gracefully and exit 0. Bad input exits 2 with a one-line reason.
import { resolve, dirname, join } from "node:path";
import { logger } from "../../runtime/log.ts";
import { parseTransportChoice } from "../../runtime/transport/negotiate.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { flushAccessLog } from "./access-log.ts";
import type { LoadReply } from "./config-loader.ts";
import { Sidecar } from "./sidecar.ts";

const USAGE = "usage: bun mesh/sidecar/main.ts --config <mesh.yaml> --pod <name> --app-socket <path> [--transport auto|uds|shm|rpal]";

interface Args {
  config: string;
  pod: string;
  appSocket: string;
  transport: string | undefined;
}

function parseArgs(argv: string[]): Args {
  const out: Partial<Args> = {};
  const names: Record<string, keyof Args> = { "--config": "config", "--pod": "pod", "--app-socket": "appSocket", "--transport": "transport" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    const key = names[flag];
    if (!key) throw new Error(`unknown argument ${JSON.stringify(a)}\n${USAGE}`);
    const v = inline ?? argv[++i];
    if (v === undefined || v === "") throw new Error(`${flag} needs a value\n${USAGE}`);
    out[key] = v;
  }
  for (const k of ["config", "pod", "appSocket"] as const) {
    if (!out[k]) throw new Error(`missing --${k === "appSocket" ? "app-socket" : k}\n${USAGE}`);
  }
  return out as Args;
}

// A signal during start-up is remembered and honoured (drain, exit 0) as soon as the sidecar is up.
let stopRequested: string | undefined;
const early = (sig: string) => () => (stopRequested ??= sig);
const earlyTerm = early("SIGTERM");
const earlyInt = early("SIGINT");
process.on("SIGTERM", earlyTerm);
process.on("SIGINT", earlyInt);

const CONFIG_LOADER = join(import.meta.dir, "config-loader.ts");

/**
 * mesh.yaml's pod and its protos' methods, loaded by a short-lived child process (config-loader.ts says
 * why). Synchronous: there is nothing else to do yet, and Bun.spawnSync leaves less resident in this
 * process than an asynchronous spawn (~0.5 MB against ~1.6 MB of touched code pages). A signal arriving
 * meanwhile is handled once it returns (see stopRequested).
 */
function loadInChild(configPath: string, pod: string): LoadReply {
  const r = Bun.spawnSync([process.execPath, CONFIG_LOADER, configPath, pod], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  if (r.exitCode === 0) {
    try {
      const reply = JSON.parse(r.stdout.toString()) as LoadReply;
      if (r.stderr.length > 0) process.stderr.write(r.stderr); // warnings, if any: not swallowed
      return reply;
    } catch {
      // fall through: say what the child printed instead
    }
  }
  const why = r.stderr.toString().trim().split("\n").filter((l) => l.trim() !== "").pop();
  const how = r.signalCode ? `was killed by ${r.signalCode}` : r.exitCode === 0 ? "printed no result" : `exited with code ${r.exitCode}`;
  throw new Error(`loading the configuration failed: ${process.execPath} ${CONFIG_LOADER} ${how}${why ? `: ${why}` : ""}`);
}

async function main(): Promise<number> {
  const log = logger("sidecar");
  let sidecar: Sidecar;
  try {
    const args = parseArgs(process.argv.slice(2));
    const configPath = resolve(args.config);
    const loaded = loadInChild(configPath, args.pod);
    if (!loaded.ok) throw new Error(loaded.message);
    const pod = loaded.pod;
    const methods = new Map(loaded.methods.map((m) => [m.path, m]));
    const override = args.transport ?? process.env.MESH_TRANSPORT;
    const transport: TransportChoice | undefined = override ? parseTransportChoice(override, args.transport ? "--transport" : "MESH_TRANSPORT") : undefined;
    // The shm provider takes its settings from the environment; mesh.yaml's sidecar.shm fills in what
    // the environment does not set (an explicit MESH_SHM_* wins, like MESH_TRANSPORT).
    process.env.MESH_SHM_RING_BYTES ??= String(pod.sidecar.shm.ring_bytes);
    process.env.MESH_SHM_SPIN ??= String(pod.sidecar.shm.spin);
    sidecar = new Sidecar({ pod, baseDir: dirname(configPath), appSocket: resolve(args.appSocket), transport, methods });
  } catch (e) {
    process.stderr.write(`sidecar: ${(e as Error).message}\n`);
    return 2;
  }
  let ready;
  try {
    ready = await sidecar.start();
  } catch (e) {
    sidecar.stop();
    process.stderr.write(`sidecar ${sidecar.podName}: ${(e as Error).message}\n`);
    return 2;
  }
  process.stdout.write(JSON.stringify(ready) + "\n");
  log.info(ready, `sidecar ${ready.pod} ready`);
  process.off("SIGTERM", earlyTerm);
  process.off("SIGINT", earlyInt);
  return await new Promise<number>((resolveExit) => {
    let draining = false;
    const onSignal = (sig: string) => {
      if (draining) return; // a second signal does not cut the drain short
      draining = true;
      log.info({ signal: sig }, "drain requested");
      sidecar.drain().then(
        () => resolveExit(0),
        (e) => {
          log.error({ err: (e as Error).message }, "drain failed");
          resolveExit(1);
        },
      );
    };
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    process.on("SIGINT", () => onSignal("SIGINT"));
    if (stopRequested) onSignal(stopRequested);
  });
}

const code = await main();
flushAccessLog();
process.exit(code);
