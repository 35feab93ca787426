// Which transports the shared RPC suite runs over on this machine. uds always; shm where its provider
// works here; rpal only against the librpal test double (see runtime/transport/rpal), named as such.
import { localUnavailableReason } from "../runtime/transport/negotiate.ts";
import type { TransportName } from "../runtime/transport/types.ts";

export interface SuiteTransport {
  /** Name shown in test titles. */
  label: string;
  transport: TransportName;
  /** Extra environment for both processes (e.g. the test double's library). */
  env: Record<string, string>;
}

export function suiteTransports(): SuiteTransport[] {
  const out: SuiteTransport[] = [{ label: "uds", transport: "uds", env: {} }];
  if (!localUnavailableReason("shm")) out.push({ label: "shm", transport: "shm", env: {} });
  return out;
}
