// gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html), so the sidecar maps
// them 1:1 to the network.
export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

export const StatusName: Record<number, string> = Object.fromEntries(Object.entries(Status).map(([k, v]) => [v, k]));

export function statusName(code: number): string {
  return StatusName[code] ?? `CODE_${code}`;
}

/** Metadata as the SDK exposes it: lower-case keys; values of "-bin" keys are Uint8Array. */
export type Metadata = Record<string, string | Uint8Array>;

/** True if `md` has at least one entry (without building a key array, as Object.keys would). */
export function hasMetadata(md: Metadata | undefined): md is Metadata {
  if (!md) return false;
  for (const _ in md) return true;
  return false;
}

/** The error a failed call rejects with (like grpc-js's ServiceError: code, details, metadata). */
export class RpcError extends Error {
  override name = "RpcError";
  constructor(
    readonly code: number,
    readonly details: string,
    readonly trailers: Metadata = {},
  ) {
    super(`${statusName(code)}: ${details}`);
  }
}

export function isRpcError(e: unknown): e is RpcError {
  return e instanceof RpcError;
}
