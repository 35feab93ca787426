// One access-log line per finished call, through pino: JSON on stderr, pretty when stderr is a terminal.
// Not through the shared synchronous logger: at 1,000 calls/s a write(2) per line costs measurable CPU,
// so lines are buffered (up to 4 KiB or 250 ms) and flushed on exit — as Envoy buffers its access log.
// MESH_ACCESS_LOG=off turns it off.
import pino, { type Logger } from "pino";
import { logger } from "../../runtime/log.ts";
import { statusName } from "../../runtime/rpc/status.ts";
import type { Direction } from "./metrics.ts";

const enabled = process.env.MESH_ACCESS_LOG !== "off";
let cachedLog: Logger | undefined;
let dest: ReturnType<typeof pino.destination> | undefined;

function accessLogger(): Logger {
  if (cachedLog) return cachedLog;
  if (process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== "json") {
    cachedLog = logger("access");
  } else {
    dest = pino.destination({ fd: 2, sync: false, minLength: 4096 });
    const d = dest;
    process.on("exit", () => d.flushSync());
    cachedLog = pino({ level: process.env.MESH_LOG_LEVEL ?? "info", base: { pid: process.pid, component: "access" } }, dest);
  }
  return cachedLog;
}

/** Writes buffered lines now (before a planned exit). */
export function flushAccessLog(): void {
  dest?.flushSync();
}

export interface AccessEntry {
  direction: Direction;
  method: string;
  code: number;
  details: string;
  durationMs: number;
  /** Outbound: the endpoint of the last attempt; inbound: "app". */
  upstream: string;
  attempts: number;
  traceId: string;
  spanId: string;
}

let flushTimer: ReturnType<typeof setTimeout> | undefined;

/** Lines reach stderr within 250 ms; an idle sidecar has no timer waking it up. */
function scheduleFlush(): void {
  if (flushTimer || !dest) return;
  flushTimer = setTimeout(() => {
    flushTimer = undefined;
    dest?.flush();
  }, 250);
  flushTimer.unref?.();
}

export function logAccess(e: AccessEntry): void {
  if (!enabled) return;
  const log = accessLogger();
  scheduleFlush();
  log.info(
    {
      direction: e.direction,
      method: e.method,
      code: statusName(e.code),
      duration_ms: Math.round(e.durationMs * 1000) / 1000,
      upstream: e.upstream,
      attempts: e.attempts,
      trace_id: e.traceId,
      span_id: e.spanId,
      ...(e.code !== 0 && e.details ? { details: e.details } : {}),
    },
    "call",
  );
}
