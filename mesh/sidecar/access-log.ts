// One access-log line per finished call: JSON on stderr in pino's line format (level, time, pid,
// component "access", the fields, msg "call"), pretty through pino when stderr is a terminal.
// Not through the shared synchronous logger: at 1,000 calls/s a write(2) per line costs measurable
// CPU, so lines are buffered (up to 4 KiB or 250 ms) and flushed on exit — as Envoy buffers its access
// log. And not through pino's object serialisation either: the line has fixed fields, so it is put
// together by hand (a few string joins instead of pino's generic walk over an object — a few µs per
// call, at 1,000 calls/s a visible share of the sidecar's CPU). Nor through pino's destination
// (sonic-boom): each line is encoded into one reused buffer here, and ~4 KiB of them go out in one
// write(2) from this thread. sonic-boom measured and flattened the joined lines (Buffer.byteLength of a
// 4 KiB rope), encoded them again for fs.write, and sent each write through the thread pool and back.
// Bun makes stderr non-blocking (a pipe): a write the pipe cannot take is kept and tried again on a
// timer, so a reader that stalls never blocks the sidecar (lines gather, up to MAX_PENDING_BYTES).
// MESH_ACCESS_LOG=off turns it off; MESH_LOG_LEVEL above info silences it too.
import type { Logger } from "pino";
import { writeSync } from "node:fs";
import { logger } from "../../runtime/log.ts";
import { statusName } from "../../runtime/rpc/status.ts";
import type { Direction } from "./metrics.ts";

const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60, silent: Infinity };
const level = process.env.MESH_LOG_LEVEL ?? "info";
const enabled = process.env.MESH_ACCESS_LOG !== "off" && (LEVELS[level] ?? 30) <= 30;

let pretty: Logger | undefined;
let json = false;
let prefix = "";
let started = false;

/** Where the JSON lines go. */
const fd = 2;

function start(): void {
  started = true;
  if (process.stderr.isTTY && process.env.MESH_LOG_FORMAT !== "json") {
    pretty = logger("access");
    return;
  }
  json = true;
  process.on("exit", () => flushSync());
  prefix = `,"pid":${process.pid},"component":"access","direction":"`;
}

/** Writes buffered lines now (before a planned exit). */
export function flushAccessLog(): void {
  flushSync();
}

/** Encoded lines not yet written: out[0, outLen). */
let out = Buffer.allocUnsafe(16 << 10);
let outLen = 0;
/** Written once this many bytes gathered (or by the 250 ms timer). */
const WRITE_BYTES = 4096;
/** Lines that would take the unwritten bytes past this (a reader that does not read) are dropped. */
const MAX_PENDING_BYTES = 64 << 20;
/** Set while the fd did not take everything (EAGAIN or a short write): the next try is on a timer. */
let retryTimer: ReturnType<typeof setTimeout> | undefined;
const RETRY_MS = 10;

/** One write(2) of what gathered; what the fd does not take now stays for a retry. False if it did not take it all. */
function writeOut(): boolean {
  if (outLen === 0) return true;
  let n = 0;
  try {
    n = writeSync(fd, out, 0, outLen);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "EAGAIN" && code !== "EWOULDBLOCK" && code !== "EINTR") {
      // stderr is gone (EPIPE, EBADF): the lines have nowhere to go.
      outLen = 0;
      return true;
    }
  }
  if (n >= outLen) {
    outLen = 0;
    if (out.length > 64 << 10) out = Buffer.allocUnsafe(16 << 10);
    return true;
  }
  if (n > 0) out.copyWithin(0, n, outLen);
  outLen -= n;
  return false;
}

function handOver(): void {
  if (retryTimer) return;
  if (!writeOut()) {
    retryTimer = setTimeout(retry, RETRY_MS);
    retryTimer.unref?.();
  }
}

function retry(): void {
  retryTimer = undefined;
  handOver();
}

/** Everything out before the process goes: waits (sleeping) while the pipe is full, 10 s at most without progress. */
function flushSync(): void {
  if (retryTimer) {
    clearTimeout(retryTimer);
    retryTimer = undefined;
  }
  const wait = new Int32Array(new SharedArrayBuffer(4));
  let stuckSince = 0;
  while (outLen > 0) {
    const before = outLen;
    if (writeOut()) return;
    const now = performance.now();
    if (outLen < before) stuckSince = 0;
    else if (stuckSince === 0) stuckSince = now;
    else if (now - stuckSince > 10_000) return;
    Atomics.wait(wait, 0, 0, 5);
  }
}

function append(line: string): void {
  // UTF-8 takes at most 3 bytes per UTF-16 unit.
  const need = outLen + line.length * 3;
  if (need > out.length) {
    if (need > MAX_PENDING_BYTES) return;
    const bigger = Buffer.allocUnsafe(Math.max(out.length * 2, need));
    out.copy(bigger, 0, 0, outLen);
    out = bigger;
  }
  outLen += out.write(line, outLen);
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
  if (flushTimer) return;
  flushTimer = setTimeout(() => {
    flushTimer = undefined;
    handOver();
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
  if (!started) start();
  if (json) {
    append(formatAccessLine(e, Date.now(), prefix));
    if (outLen >= WRITE_BYTES) handOver();
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
