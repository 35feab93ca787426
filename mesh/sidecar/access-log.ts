// One access-log line per finished call, through pino (JSON on stderr; pretty on a terminal).
// MESH_ACCESS_LOG=off turns it off (benchmarks that measure the sidecar without log cost).
import { logger } from "../../runtime/log.ts";
import { statusName } from "../../runtime/rpc/status.ts";
import type { Direction } from "./metrics.ts";

const log = logger("access");
const enabled = process.env.MESH_ACCESS_LOG !== "off";

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

export function logAccess(e: AccessEntry): void {
  if (!enabled) return;
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
