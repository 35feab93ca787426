// W3C Trace Context (https://www.w3.org/TR/trace-context/): every hop through a sidecar keeps the
// trace id, records the incoming span as parent, and sends a new span id onward. A missing or
// malformed traceparent starts a new trace (malformed input is dropped, never forwarded).
import { randomFillSync } from "node:crypto";

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const rnd = new Uint8Array(240);
let rndUsed = rnd.length;

function randomHex(bytes: 8 | 16): string {
  // One getrandom call per 240 bytes (10 hops) rather than per id.
  if (rndUsed + bytes > rnd.length) {
    randomFillSync(rnd);
    rndUsed = 0;
  }
  let s = "";
  for (let i = 0; i < bytes; i++) s += HEX[rnd[rndUsed + i]!]!;
  rndUsed += bytes;
  return s;
}

export interface TraceContext {
  traceId: string;
  /** The span id the caller sent (undefined when this hop started the trace). */
  parentId: string | undefined;
  /** This hop's span id, sent onward. */
  spanId: string;
  flags: string;
  /** The header value to send onward. */
  traceparent: string;
}

export function parseTraceparent(value: string | undefined): { traceId: string; spanId: string; flags: string } | undefined {
  if (!value) return undefined;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as [string, string, string, string, string, string | undefined];
  // Version ff is invalid; version 00 must have nothing after the flags.
  if (version === "ff" || (version === "00" && rest)) return undefined;
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, flags };
}

/** The context for this hop: continues `incoming` when valid, else starts a sampled trace. */
export function nextHop(incoming: string | undefined): TraceContext {
  const p = parseTraceparent(incoming);
  const traceId = p?.traceId ?? randomHex(16);
  const spanId = randomHex(8);
  const flags = p?.flags ?? "01";
  return { traceId, parentId: p?.spanId, spanId, flags, traceparent: `00-${traceId}-${spanId}-${flags}` };
}
