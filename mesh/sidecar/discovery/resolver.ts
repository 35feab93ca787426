// DnsDiscovery behind the sidecar's Resolver interface (mesh/sidecar/resolver.ts), so the router can
// take Kubernetes service names without knowing how they are resolved.
import type { Resolver } from "../resolver.ts";
import { DnsDiscovery, formatEndpoint, type DnsDiscoveryOptions } from "./dns.ts";

export class DnsDiscoveryResolver implements Resolver {
  private readonly discovery: DnsDiscovery;
  private unsubscribe: (() => void) | undefined;

  /** `target` is the upstream's `dns:` value; DNS servers default to $MESH_DNS_SERVERS, else the system's. */
  constructor(target: string, opts: DnsDiscoveryOptions = {}) {
    this.discovery = new DnsDiscovery(target, opts);
  }

  /**
   * Calls `onUpdate` with every change of the endpoint set, including an empty set when the name stops
   * existing (a headless Service with no ready pods), so calls fail fast instead of going to dead pods.
   */
  start(onUpdate: (addresses: string[]) => void): void {
    this.unsubscribe = this.discovery.subscribe((eps) => onUpdate(eps.map(formatEndpoint)));
    void this.discovery.start().then(() => {
      // An IP literal never "changes", so report it once here.
      if (this.discovery.target.kind === "ip") onUpdate(this.discovery.endpoints.map(formatEndpoint));
    });
  }

  /** Why the last lookup failed, if it did. */
  get error(): string | undefined {
    return this.discovery.error;
  }

  close(): void {
    this.unsubscribe?.();
    this.discovery.close();
  }
}
