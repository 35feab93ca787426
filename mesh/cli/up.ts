// `mesh up [file]`: load and check mesh.yaml, then hand over to the supervisor.
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { fieldLocation, loadConfig } from "../config/index.ts";
import { StartupError, UserError } from "../supervisor/errors.ts";
import { preflight } from "../supervisor/preflight.ts";
import { SIDECAR_ENTRY, Supervisor } from "../supervisor/supervisor.ts";
import { TRANSPORT_CHOICES } from "../config/schema.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";

export const DEFAULT_CONFIG = join(import.meta.dir, "../../examples/hello/mesh.yaml");
const RPAL_ELF_MARK = join(import.meta.dir, "../../runtime/transport/rpal/elf-mark.ts");

export interface UpFlags {
  transport?: string;
  readyTimeout: string;
  grace: string;
  logs?: boolean;
}

function seconds(value: string, flag: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new UserError(`${flag} ${value}: expected seconds, more than 0 and at most 3600 — e.g. ${flag} 10`);
  return n * 1000;
}

/** --transport wins over MESH_TRANSPORT, which wins over each pod's sidecar.transport. */
function transportOverride(flag: string | undefined): TransportChoice | undefined {
  const [value, source] = flag !== undefined ? [flag, "--transport"] : [process.env.MESH_TRANSPORT, "MESH_TRANSPORT"];
  if (value === undefined || value === "") return undefined;
  if (!(TRANSPORT_CHOICES as readonly string[]).includes(value)) {
    throw new UserError(`${source}=${value}: expected one of ${TRANSPORT_CHOICES.join(", ")} — e.g. ${source === "--transport" ? "--transport shm" : "MESH_TRANSPORT=shm"}`);
  }
  return value as TransportChoice;
}

const RPAL_DETECT = join(import.meta.dir, "../../runtime/transport/rpal/detect.ts");

/**
 * A forced rpal that cannot work here would only crash-loop every app: check the preconditions (kernel,
 * librpal, CPU, the marked bun) once, up front, and say which one fails and how to fix it.
 */
async function checkRpal(where: string): Promise<void> {
  if (!existsSync(RPAL_DETECT)) return;
  type Pre = { name: string; ok: boolean; detail: string; fix?: string };
  const { detectRpal } = (await import(RPAL_DETECT)) as { detectRpal: () => { preconditions: Pre[] } };
  // The ELF mark is ours to provide (the marked copy of bun), so it is not a reason to refuse.
  const failing = detectRpal().preconditions.find((p) => !p.ok && p.name !== "executable");
  if (failing) {
    throw new UserError(
      `${where}: rpal cannot be used on this machine: ${failing.detail}; ${failing.fix ?? ""} — or use auto (falls back to shm/uds); \`bun run mesh doctor\` shows every check`,
    );
  }
}

/** Under rpal, app and sidecar must run on a bun binary carrying the RPAL ELF mark. */
async function bunFor(usesRpal: boolean): Promise<string> {
  if (!usesRpal) return process.execPath;
  if (!existsSync(RPAL_ELF_MARK)) throw new StartupError("--transport rpal needs runtime/transport/rpal/elf-mark.ts, which is not in this checkout");
  const { markedBun } = (await import(RPAL_ELF_MARK)) as { markedBun: () => { path: string } };
  try {
    return markedBun().path;
  } catch (e) {
    throw new StartupError(`cannot prepare the RPAL-marked bun: ${(e as Error).message}`);
  }
}

export async function upMain(file: string | undefined, flags: UpFlags): Promise<number> {
  const configPath = resolve(file ?? DEFAULT_CONFIG);
  const transport = transportOverride(flags.transport);
  const readyTimeoutMs = seconds(flags.readyTimeout, "--ready-timeout");
  const graceMs = seconds(flags.grace, "--grace");
  const config = loadConfig(configPath);
  if (!existsSync(SIDECAR_ENTRY)) {
    throw new StartupError(`the sidecar is missing (${SIDECAR_ENTRY}) — this checkout is incomplete`);
  }
  await preflight(config, configPath);
  const rpalPod = config.pods.findIndex((p) => (transport ?? p.sidecar.transport) === "rpal");
  const usesRpal = rpalPod >= 0;
  if (usesRpal) {
    const where = transport
      ? flags.transport !== undefined
        ? "--transport rpal"
        : "MESH_TRANSPORT=rpal"
      : fieldLocation(configPath, ["pods", rpalPod, "sidecar", "transport"]);
    await checkRpal(where);
  }
  const bunPath = await bunFor(usesRpal);
  const supervisor = new Supervisor({
    config,
    configPath,
    transport,
    readyTimeoutMs,
    graceMs,
    mirrorLogs: flags.logs === true,
    bunPath,
  });
  return supervisor.run();
}
