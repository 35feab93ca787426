// One logger factory for the runtime and the mesh: pino, JSON lines on stderr (stdout belongs to the
// app), pretty when stderr is a terminal. MESH_LOG_LEVEL sets the level (default "info").
import pino, { type Logger } from "pino";

let root: Logger | undefined;

function makeRoot(): Logger {
  const level = process.env.MESH_LOG_LEVEL ?? "info";
  const pretty = process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== "json";
  if (pretty) {
    return pino({
      level,
      transport: { target: "pino-pretty", options: { destination: 2, colorize: true, translateTime: "HH:MM:ss.l" } },
    });
  }
  return pino({ level, base: { pid: process.pid } }, pino.destination({ fd: 2, sync: true }));
}

export function logger(component: string): Logger {
  root ??= makeRoot();
  return root.child({ component });
}

export type { Logger };
