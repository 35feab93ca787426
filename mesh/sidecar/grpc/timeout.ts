// The grpc-timeout header (PROTOCOL-HTTP2.md): "Timeout → TimeoutValue TimeoutUnit", at most 8 ASCII
// digits and one of H M S m u n. It is relative, so each hop re-encodes what is left of its deadline.

const UNIT_MS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** Milliseconds (possibly fractional) a grpc-timeout value allows, or undefined if it is malformed. */
export function parseGrpcTimeout(value: string): number | undefined {
  const n = value.length;
  if (n < 2 || n > 9) return undefined;
  const unit = UNIT_MS[value[n - 1]!];
  if (unit === undefined) return undefined;
  let v = 0;
  for (let i = 0; i < n - 1; i++) {
    const c = value.charCodeAt(i) - 48;
    if (c < 0 || c > 9) return undefined;
    v = v * 10 + c;
  }
  return v * unit;
}

const MAX_VALUE = 99_999_999;

/**
 * A grpc-timeout value for `ms` milliseconds from now: the finest unit whose value fits in 8 digits,
 * rounded up (the receiver never sees less time than the sender has). A deadline already passed is sent
 * as 1 nanosecond: the spec wants a positive value.
 */
export function formatGrpcTimeout(ms: number): string {
  if (!(ms > 0)) return "1n";
  if (ms < 1) return `${Math.ceil(ms * 1000)}u`;
  if (ms <= MAX_VALUE) return `${Math.ceil(ms)}m`;
  const s = Math.ceil(ms / 1000);
  if (s <= MAX_VALUE) return `${s}S`;
  const m = Math.ceil(ms / 60_000);
  if (m <= MAX_VALUE) return `${m}M`;
  return `${Math.min(MAX_VALUE, Math.ceil(ms / 3_600_000))}H`;
}
