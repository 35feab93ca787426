// W3C Trace Context (https://www.w3.org/TR/trace-context/): every hop through a sidecar keeps the
// trace id, records the incoming span as parent, and sends a new span id onward. A missing or
// malformed traceparent starts a new trace (malformed input is dropped, never forwarded).
// Random bytes come from Web Crypto's getRandomValues (getrandom, like node:crypto's randomFillSync):
// it is built in, so the sidecar does not load node:crypto for it.

const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

// Random bytes drawn 4 KiB at a time and turned into hex in one call (~340 hops' ids per getrandom and
// per Buffer#toString); an id is a slice of that string. A toString("hex") per id was ~1.5 % of a
// sidecar's CPU at 1,000 calls/s (perf, jitdump): the call's fixed cost, not the 16 bytes.
const RANDOM_BYTES = 4096;
const rnd = Buffer.alloc(RANDOM_BYTES);
let rndHex = "";
let rndUsed = RANDOM_BYTES * 2;

function randomHex(bytes: 8 | 16): string {
  const chars = bytes * 2;
  if (rndUsed + chars > rndHex.length) {
    crypto.getRandomValues(rnd);
    rndHex = rnd.toString("hex");
    rndUsed = 0;
  }
  const s = rndHex.slice(rndUsed, rndUsed + chars);
  rndUsed += chars;
  return s;
}

/** True when s[from, to) is lower-case hex. */
function isHex(s: string, from: number, to: number): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (!((c >= 48 && c <= 57) || (c >= 97 && c <= 102))) return false;
  }
  return true;
}

/** Could String#trim remove this character? (Conservative: every control, space and non-ASCII character.) */
function isSpace(c: number): boolean {
  return c <= 32 || c >= 127;
}

/** What `.` in a regular expression does not match. */
function hasLineTerminator(s: string, from: number): boolean {
  for (let i = from; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 10 || c === 13 || c === 0x2028 || c === 0x2029) return true;
  }
  return false;
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

/**
 * version "-" trace-id "-" parent-id "-" flags, lower-case hex of 2, 32, 16 and 2 digits (what
 * /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/ accepts, checked by hand: a
 * regular expression's match array per call was a visible share of a sidecar's CPU).
 */
export function parseTraceparent(value: string | undefined): { traceId: string; spanId: string; flags: string } | undefined {
  if (!value) return undefined;
  // trim() only when there is something to trim: the call into the runtime is the dearer part.
  const v = isSpace(value.charCodeAt(0)) || isSpace(value.charCodeAt(value.length - 1)) ? value.trim() : value;
  const n = v.length;
  if (n < 55) return undefined;
  if (v.charCodeAt(2) !== 45 || v.charCodeAt(35) !== 45 || v.charCodeAt(52) !== 45) return undefined;
  if (!isHex(v, 0, 2) || !isHex(v, 3, 35) || !isHex(v, 36, 52) || !isHex(v, 53, 55)) return undefined;
  const rest = n > 55;
  if (rest && (v.charCodeAt(55) !== 45 || hasLineTerminator(v, 56))) return undefined;
  const version = v.slice(0, 2);
  // Version ff is invalid; version 00 must have nothing after the flags.
  if (version === "ff" || (version === "00" && rest)) return undefined;
  const traceId = v.slice(3, 35);
  const spanId = v.slice(36, 52);
  if (traceId === ZERO_TRACE || spanId === ZERO_SPAN) return undefined;
  return { traceId, spanId, flags: v.slice(53, 55) };
}

/** The context for this hop: continues `incoming` when valid, else starts a sampled trace. */
export function nextHop(incoming: string | undefined): TraceContext {
  const p = parseTraceparent(incoming);
  const traceId = p?.traceId ?? randomHex(16);
  const spanId = randomHex(8);
  const flags = p?.flags ?? "01";
  return { traceId, parentId: p?.spanId, spanId, flags, traceparent: `00-${traceId}-${spanId}-${flags}` };
}
