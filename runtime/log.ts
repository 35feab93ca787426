// One logger factory for the runtime and the mesh: pino, JSON lines on stderr (stdout belongs to the
// app), pretty when stderr is a terminal. MESH_LOG_LEVEL sets the level (default "info").
import { createRequire } from "node:module";
import pino, { type Logger } from "pino";

let root: Logger | undefined;

function makeRoot(): Logger {
  const level = process.env.MESH_LOG_LEVEL ?? "info";
  const pretty = process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== "json";
  if (pretty) {
    // pino-pretty as a stream in this process rather than as a pino transport: a transport runs in a
    // Worker (thread-stream), which costs a thread and a VM's memory, and the sidecar bundle leaves
    // pino's transport support out (bundle.ts). Loaded through createRequire so that neither the
    // bundle nor a process logging JSON (the usual case) loads it.
    const pretty = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
    return pino({ level }, pretty({ destination: 2, colorize: true, translateTime: "HH:MM:ss.l", sync: true }));
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export function logger(component: string): Logger {
  root ??= makeRoot();
  return root.child({ component });
}

export type { Logger };
