// Turning an upstream's `endpoints` or `dns` into addresses. Kept behind the small Resolver interface so
// other discovery (e.g. Kubernetes, in discovery/) can plug in without touching the router.
import { Resolver as DnsClient } from "node:dns/promises";
import { lookup } from "node:dns/promises";
import { logger } from "../../runtime/log.ts";

const log = logger("resolver");

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

export interface DnsResolverOptions {
  /** DNS servers ("ip" or "ip:port"); default: the system's. */
  servers?: string[];
  minRefreshMs?: number;
  maxRefreshMs?: number;
  /** Delay before trying again after a failed lookup (the last good list is kept meanwhile). */
  retryMs?: number;
}

function splitHostPort(target: string): { host: string; port: number } {
  const i = target.lastIndexOf(":");
  const host = target.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(target.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`dns target "${target}" is not host:port`);
  }
  return { host, port };
}

function formatAddress(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Resolves "name:port" with A records, or "_service._proto.name:port" with SRV records (the SRV port
 * wins; the port after the colon is ignored for SRV), and re-resolves when the shortest TTL runs out.
 * Names the DNS servers do not know (such as "localhost") fall back to the system resolver
 * (/etc/hosts) when no explicit servers were given.
 */
export class DnsResolver implements Resolver {
  private readonly client = new DnsClient({ timeout: 2000, tries: 2 });
  private readonly host: string;
  private readonly port: number;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private closed = false;
  private last = "";
  private readonly minRefreshMs: number;
  private readonly maxRefreshMs: number;
  private readonly retryMs: number;

  constructor(
    readonly target: string,
    private readonly opts: DnsResolverOptions = {},
  ) {
    ({ host: this.host, port: this.port } = splitHostPort(target));
    if (opts.servers) this.client.setServers(opts.servers);
    this.minRefreshMs = opts.minRefreshMs ?? 1000;
    this.maxRefreshMs = opts.maxRefreshMs ?? 300_000;
    this.retryMs = opts.retryMs ?? 5000;
  }

  start(onUpdate: (addresses: string[]) => void): void {
    const tick = async () => {
      let nextMs = this.retryMs;
      try {
        const { addresses, ttlSeconds } = await this.resolveOnce();
        const key = addresses.join(",");
        if (key !== this.last && addresses.length > 0) {
          this.last = key;
          if (!this.closed) onUpdate(addresses);
        }
        if (addresses.length === 0) log.warn({ target: this.target }, "DNS returned no addresses; keeping the last known list");
        nextMs = Math.min(this.maxRefreshMs, Math.max(this.minRefreshMs, ttlSeconds * 1000));
      } catch (e) {
        log.warn({ target: this.target, err: (e as Error).message }, `DNS lookup failed; retrying in ${this.retryMs} ms`);
      }
      if (!this.closed) {
        this.timer = setTimeout(tick, nextMs);
        this.timer.unref?.();
      }
    };
    void tick();
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
  }

  private async resolveA(name: string): Promise<{ ips: string[]; ttl: number }> {
    try {
      const recs = await this.client.resolve4(name, { ttl: true });
      return { ips: recs.map((r) => r.address), ttl: Math.min(...recs.map((r) => r.ttl)) };
    } catch (e) {
      if (this.opts.servers) throw e;
      const all = await lookup(name, { all: true });
      return { ips: all.map((a) => a.address), ttl: 30 };
    }
  }

  /** One lookup: sorted "ip:port" list and the shortest TTL seen. */
  async resolveOnce(): Promise<{ addresses: string[]; ttlSeconds: number }> {
    const out = new Set<string>();
    let ttl = Infinity;
    if (this.host.startsWith("_")) {
      const srv = await this.client.resolveSrv(this.host);
      // node:dns does not report SRV TTLs; the A lookups of the targets bound the refresh instead.
      for (const r of srv) {
        const a = await this.resolveA(r.name);
        ttl = Math.min(ttl, a.ttl);
        for (const ip of a.ips) out.add(formatAddress(ip, r.port));
      }
    } else {
      const a = await this.resolveA(this.host);
      ttl = a.ttl;
      for (const ip of a.ips) out.add(formatAddress(ip, this.port));
    }
    return { addresses: [...out].sort(), ttlSeconds: Number.isFinite(ttl) ? ttl : 30 };
  }
}

export interface UpstreamTarget {
  endpoints?: string[] | undefined;
  dns?: string | undefined;
}

/** The resolver for an upstream block of mesh.yaml. */
export function makeResolver(u: UpstreamTarget, dnsOpts: DnsResolverOptions = {}): Resolver {
  if (u.endpoints) return new StaticResolver(u.endpoints);
  if (u.dns) return new DnsResolver(u.dns, dnsOpts);
  throw new Error("upstream has neither endpoints nor dns");
}
