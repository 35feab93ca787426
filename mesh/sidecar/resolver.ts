// Turning an upstream's `endpoints` or `dns` into addresses, behind one small interface so the router
// does not care how. `dns:` is served by discovery/ (A/AAAA/SRV re-resolved on TTL, NXDOMAIN empties
// the set, DNS failures keep the last good one, $MESH_DNS_SERVERS picks the servers).
import { DnsDiscoveryResolver } from "./discovery/resolver.ts";

export interface Resolver {
  /** Starts resolving; `onUpdate` gets the full "host:port" list whenever it changes (at least once on success). */
  start(onUpdate: (addresses: string[]) => void): void;
  close(): void;
}

export class StaticResolver implements Resolver {
  constructor(private readonly addresses: readonly string[]) {}
  start(onUpdate: (addresses: string[]) => void): void {
    onUpdate([...this.addresses]);
  }
  close(): void {}
}

export interface UpstreamTarget {
  endpoints?: string[] | undefined;
  dns?: string | undefined;
}

/** The resolver for an upstream block of mesh.yaml. */
export function makeResolver(u: UpstreamTarget): Resolver {
  if (u.endpoints) return new StaticResolver(u.endpoints);
  if (u.dns) return new DnsDiscoveryResolver(u.dns);
  throw new Error("upstream has neither endpoints nor dns");
}
