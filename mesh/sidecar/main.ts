// The sidecar process: `bun mesh/sidecar/main.ts --config <mesh.yaml> --pod <name> --app-socket <path>
// [--transport auto|uds|shm|rpal]`. Prints one JSON "ready" line on stdout once listening; logs go to
// stderr. SIGTERM/SIGINT drain gracefully and exit 0. Bad input exits 2 with a one-line reason.
import { resolve, dirname } from "node:path";
import { logger } from "../../runtime/log.ts";
import { parseTransportChoice } from "../../runtime/transport/negotiate.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import { flushAccessLog } from "./access-log.ts";
import type { LoadReply, LoadRequest } from "./config-worker.ts";
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

/** mesh.yaml's pod and its protos' methods, loaded in a worker (see config-worker.ts for why). */
async function loadInWorker(req: LoadRequest): Promise<LoadReply> {
  const worker = new Worker(new URL("./config-worker.ts", import.meta.url).href);
  try {
    return await new Promise<LoadReply>((resolveReply, reject) => {
      worker.onmessage = (ev: MessageEvent<LoadReply>) => resolveReply(ev.data);
      worker.onerror = (ev) => reject(new Error(`loading the configuration failed: ${ev.message}`));
      worker.postMessage(req);
    });
  } finally {
    worker.terminate();
  }
}

async function main(): Promise<number> {
  const log = logger("sidecar");
  let sidecar: Sidecar;
  try {
    const args = parseArgs(process.argv.slice(2));
    const configPath = resolve(args.config);
    const loaded = await loadInWorker({ configPath, pod: args.pod });
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
