// One upstream address as the policies see it. The router owns the gRPC client behind it; balancer,
// outlier detection and metrics only read and update these counters.

export interface Endpoint {
  /** "host:port" exactly as resolved (also the metrics label). */
  readonly address: string;
  /** Calls in flight to this endpoint (p2c_least_request compares these). */
  active: number;
  /** Outlier detection: failures in a row, how often ejected, and until when (Date.now() ms; 0 = not ejected). */
  consecutiveFailures: number;
  ejections: number;
  ejectedUntil: number;
}

export function newEndpoint(address: string): Endpoint {
  return { address, active: 0, consecutiveFailures: 0, ejections: 0, ejectedUntil: 0 };
}
