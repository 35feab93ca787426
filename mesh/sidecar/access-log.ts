// One access-log line per finished call: JSON on stderr in pino's line format (level, time, pid,
// component "access", the fields, msg "call"), pretty through pino when stderr is a terminal.
// Not through the shared synchronous logger: at 1,000 calls/s a write(2) per line costs measurable
// CPU, so lines are buffered (up to 4 KiB or 250 ms) and flushed on exit — as Envoy buffers its access
// log. And not through pino's object serialisation either: the line has fixed fields, so it is put
// together by hand (a few string joins instead of pino's generic walk over an object — a few µs per
// call, at 1,000 calls/s a visible share of the sidecar's CPU). The bytes still go through pino's
// buffered destination, ~4 KiB at a time: lines are joined here first, since the destination measures
// the UTF-8 length of its whole pending chunk on every write (Buffer.byteLength of up to 16 KiB per line). MESH_ACCESS_LOG=off turns it off; MESH_LOG_LEVEL above info silences it too.
import pino, { type Logger } from "pino";
import { logger } from "../../runtime/log.ts";
import { statusName } from "../../runtime/rpc/status.ts";
import type { Direction } from "./metrics.ts";

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const level = process.env.MESH_LOG_LEVEL ?? "info";
const enabled = process.env.MESH_ACCESS_LOG !== "off" && (LEVELS[level] ?? 30) <= 30;

let pretty: Logger | undefined;
let dest: ReturnType<typeof pino.destination> | undefined;
let prefix = "";
let started = false;
let broken = false;
/** Lines dropped: the reader stopped reading (sonic-boom's maxLength), or stderr failed. */
let droppedLines = 0;
const MAX_QUEUED_BYTES = 64 * 1024 * 1024;

/** Access-log lines dropped: stderr's reader fell more than 64 MiB behind, or stderr failed (/metrics). */
export function accessLogDroppedLines(): number {
  return droppedLines;
}

function countLines(text: string): number {
  let n = 0;
  for (let i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n++;
  return n;
}

function start(): void {
  started = true;
  if (process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== "json") {
    pretty = logger("access");
    return;
  }
  // maxLength: a reader that stops reading costs at most 64 MiB of queued lines; past it sonic-boom
  // drops them (counted below) instead of growing without bound.
  dest = pino.destination({ fd: 2, sync: false, minLength: 4096, maxLength: MAX_QUEUED_BYTES });
  const d = dest;
  // stderr gone (EPIPE: the supervisor or container runtime died) or failing: stop logging calls
  // rather than let an unhandled 'error' event take the sidecar and its traffic down with it.
  d.on("error", () => {
    broken = true;
  });
  d.on("drop", (data: string) => {
    droppedLines += countLines(data);
  });
  process.on("exit", () => {
    handOver();
    if (broken) return;
    try {
      d.flushSync();
    } catch {
      // stderr is gone: nothing left to tell
    }
  });
  prefix = `,"pid":${process.pid},"component":"access","direction":"`;
}

/** Writes buffered lines now (before a planned exit). */
export function flushAccessLog(): void {
  handOver();
  if (broken) return;
  try {
    dest?.flushSync();
  } catch {
    broken = true; // stderr is gone
  }
}

/** Lines not yet given to the destination. */
let pending = "";
const HAND_OVER_CHARS = 4096;

function handOver(): void {
  if (pending === "" || !dest) return;
  if (broken) {
    droppedLines += countLines(pending);
    pending = "";
    return;
  }
  dest.write(pending);
  pending = "";
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
    handOver();
    dest?.flush();
  }, 250);
  flushTimer.unref?.();
}

// Characters that need escaping in a JSON string (and lone surrogates, which JSON.stringify escapes).
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/;

/** A JSON string literal: as is when nothing needs escaping (method paths, addresses, ids usually). */
function str(s: string): string {
  return NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`;
}

/** The line pino would write for these fields (same keys, same order). Exported for the test. */
export function formatAccessLine(e: AccessEntry, now: number, head: string): string {
  let line = `{"level":30,"time":${now}${head}${e.direction}","method":${str(e.method)},"code":"${statusName(e.code)}","duration_ms":${Math.round(e.durationMs * 1000) / 1000},"upstream":${str(e.upstream)},"attempts":${e.attempts},"trace_id":"${e.traceId}","span_id":"${e.spanId}"`;
  if (e.code !== 0 && e.details) line += `,"details":${str(e.details)}`;
  return line + ',"msg":"call"}\n';
}

export function logAccess(e: AccessEntry): void {
  if (!enabled) return;
  if (broken) {
    droppedLines++;
    return;
  }
  if (!started) start();
  if (dest) {
    pending += formatAccessLine(e, Date.now(), prefix);
    if (pending.length >= HAND_OVER_CHARS) handOver();
    scheduleFlush();
    return;
  }
  pretty!.info(accessFields(e), "call");
}

/** The fields of an access-log line as pino gets them (the pretty path; the test's reference for formatAccessLine). */
export function accessFields(e: AccessEntry): Record<string, string | number> {
  return {
    direction: e.direction,
    method: e.method,
    code: statusName(e.code),
    duration_ms: Math.round(e.durationMs * 1000) / 1000,
    upstream: e.upstream,
    attempts: e.attempts,
    trace_id: e.traceId,
    span_id: e.spanId,
    ...(e.code !== 0 && e.details ? { details: e.details } : {}),
  };
}
