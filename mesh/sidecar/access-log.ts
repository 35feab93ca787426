// One access-log line per finished call: JSON on stderr in pino's line format (level, time, pid,
// component "access", the fields, msg "call"), pretty through pino when stderr is a terminal.
// Not through the shared synchronous logger: at 1,000 calls/s a write(2) per line costs measurable
// CPU, so lines are buffered (64 calls or 250 ms) and flushed on exit — as Envoy buffers its access
// log. And not through pino's object serialisation either: the line has fixed fields, so it is put
// together by hand (a few string joins instead of pino's generic walk over an object). A call only
// records its fields (and time); the lines are formatted a batch at a time when they are handed to
// pino's buffered destination (~16 KiB at a time), not one by one between the network and app work of
// each call, where the formatting ran cache-cold. MESH_ACCESS_LOG=off turns it off; MESH_LOG_LEVEL above info silences it too.
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

/**
 * Calls recorded but not yet formatted: their fields, in arrays (one slot per call, reused). A line is
 * formatted only when the batch is handed over (BATCH calls, the 250 ms timer, a flush or exit): in a
 * loaded sidecar formatting one line per call ran cache-cold between network and app work, ~10x its
 * cost in a tight loop; a batch of lines formats in one go. The line and its time are those of the call.
 */
const BATCH = 64;
let queued = 0;
const qTime = new Float64Array(BATCH);
const qCode = new Float64Array(BATCH);
const qAttempts = new Float64Array(BATCH);
const qDuration = new Float64Array(BATCH);
const qDirection: Direction[] = new Array(BATCH).fill("inbound");
const qMethod: string[] = new Array(BATCH).fill("");
const qDetails: string[] = new Array(BATCH).fill("");
const qUpstream: string[] = new Array(BATCH).fill("");
const qTraceId: string[] = new Array(BATCH).fill("");
const qSpanId: string[] = new Array(BATCH).fill("");

/** Formats the queued calls into lines, in order, and hands them to the destination. */
function handOver(): void {
  const n = queued;
  if (n === 0 || !dest) return;
  queued = 0;
  if (broken) {
    droppedLines += n;
    clearQueue(n);
    return;
  }
  let text = "";
  const e = scratchEntry;
  for (let i = 0; i < n; i++) {
    e.direction = qDirection[i]!;
    e.method = qMethod[i]!;
    e.code = qCode[i]!;
    e.details = qDetails[i]!;
    e.durationMs = qDuration[i]!;
    e.upstream = qUpstream[i]!;
    e.attempts = qAttempts[i]!;
    e.traceId = qTraceId[i]!;
    e.spanId = qSpanId[i]!;
    text += formatAccessLine(e, qTime[i]!, prefix);
  }
  clearQueue(n);
  dest.write(text);
}

/** Lets go of the queued strings (the slots are reused, but an idle sidecar should not hold them). */
function clearQueue(n: number): void {
  for (let i = 0; i < n; i++) qMethod[i] = qDetails[i] = qUpstream[i] = qTraceId[i] = qSpanId[i] = "";
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

const scratchEntry: AccessEntry = { direction: "inbound", method: "", code: 0, details: "", durationMs: 0, upstream: "", attempts: 0, traceId: "", spanId: "" };

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

/**
 * Does `s` hold a character that needs escaping in a JSON string: a quote, a backslash, a control
 * character, or a surrogate (JSON.stringify escapes the lone ones)? A loop rather than a RegExp#test,
 * which is a call into the runtime for each field of each line.
 */
function needsEscape(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x22 || c === 0x5c || (c >= 0xd800 && c <= 0xdfff)) return true;
  }
  return false;
}

/** A JSON string literal: as is when nothing needs escaping (method paths, addresses, ids usually). */
function str(s: string): string {
  return needsEscape(s) ? JSON.stringify(s) : `"${s}"`;
}

// The line's two fractional or large numbers, the time (13 digits) and the duration (3 decimals), as
// text by hand: Number#toString on a double is a shortest-round-trip conversion in the runtime, and
// the two took half of formatAccessLine's time in perf. Whole numbers under 1000 come from a table
// filled on first use; the time's seconds are kept from the line before.
const smallText: string[] = [];

/** String(n) for a whole 0 <= n < 1000. */
function small(n: number): string {
  return (smallText[n] ??= String(n));
}

/** A whole 0 <= n < 1000 in three digits. */
function threeDigits(n: number): string {
  return n >= 100 ? small(n) : n >= 10 ? "0" + small(n) : "00" + small(n);
}

let lastSecond = -1;
let lastSecondText = "";

/** String(ms) of a Date.now() value. */
export function timeText(ms: number): string {
  if (!(ms >= 1000 && ms <= Number.MAX_SAFE_INTEGER && Number.isInteger(ms))) return String(ms);
  const second = Math.floor(ms / 1000);
  if (second !== lastSecond) {
    lastSecond = second;
    lastSecondText = String(second);
  }
  return lastSecondText + threeDigits(ms - second * 1000);
}

/** String(Math.round(ms * 1000) / 1000): a duration to the microsecond, as pino's line has it. */
export function durationText(ms: number): string {
  const us = Math.round(ms * 1000);
  if (!(us >= 0 && us < 1_000_000)) return String(us / 1000);
  const whole = Math.floor(us / 1000);
  const frac = us - whole * 1000;
  // Number#toString writes no trailing zeros: .5, .05, .123.
  if (frac === 0) return small(whole);
  if (frac % 100 === 0) return small(whole) + "." + small(frac / 100);
  if (frac % 10 === 0) return small(whole) + (frac < 100 ? ".0" : ".") + small(frac / 10);
  return small(whole) + "." + threeDigits(frac);
}

/** The line pino would write for these fields (same keys, same order). Exported for the test. */
export function formatAccessLine(e: AccessEntry, now: number, head: string): string {
  let line = `{"level":30,"time":${timeText(now)}${head}${e.direction}","method":${str(e.method)},"code":"${statusName(e.code)}","duration_ms":${durationText(e.durationMs)},"upstream":${str(e.upstream)},"attempts":${e.attempts},"trace_id":"${e.traceId}","span_id":"${e.spanId}"`;
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
    const i = queued++;
    qTime[i] = Date.now();
    qDirection[i] = e.direction;
    qMethod[i] = e.method;
    qCode[i] = e.code;
    qDetails[i] = e.details;
    qDuration[i] = e.durationMs;
    qUpstream[i] = e.upstream;
    qAttempts[i] = e.attempts;
    qTraceId[i] = e.traceId;
    qSpanId[i] = e.spanId;
    if (queued === BATCH) handOver();
    else scheduleFlush();
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
