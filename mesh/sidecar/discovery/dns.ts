// DNS discovery for upstreams given as `dns: name:port` — in Kubernetes, the headless Service of the
// pod that serves the upstream. A/AAAA (or SRV) records are re-resolved when their TTL runs out, so
// pods that come and go are picked up without a restart.
//
// What this module decides, and why:
// - The set of endpoints is sorted and only reported when it changes, so the balancer's per-endpoint
//   state (outlier ejection, in-flight counts) survives a refresh that returns the same addresses.
// - "The name does not exist" (NXDOMAIN/NODATA) empties the set: a headless Service without ready pods
//   answers that way, and calls should then fail fast with UNAVAILABLE rather than go to dead pods.
//   Any other failure (timeout, refused, SERVFAIL) keeps the last good set: a DNS hiccup must not take
//   a healthy upstream down. Retries back off up to the longest refresh interval.
// - Answers are untrusted: at most `maxEndpoints` are kept, ports outside 1..65535 are dropped.
import type { Resolver } from "node:dns/promises";
import { isIP } from "./ip.ts";
import { logger, type Logger } from "../../../runtime/log.ts";
import { parseDnsServers, parseDnsTarget, type DnsTarget } from "./target.ts";

export interface DnsEndpoint {
  /** An IP address (IPv6 without brackets). */
  readonly host: string;
  readonly port: number;
}

export interface DnsDiscoveryOptions {
  /** DNS servers ("ip", "ip:port", "[v6]:port"). Default: $MESH_DNS_SERVERS, else the system's (resolv.conf). */
  servers?: readonly string[] | string;
  /** Floor for the TTL-driven refresh; a TTL of 0 must not turn into a query loop. Default 1000 ms. */
  minRefreshMs?: number;
  /** Ceiling for the refresh interval and for the error backoff. Default 30000 ms. */
  maxRefreshMs?: number;
  /** First retry after a failed or empty lookup; doubles up to maxRefreshMs. Default 500 ms. */
  retryMs?: number;
  /** Per-query timeout handed to c-ares. Default 2000 ms, 2 tries. */
  queryTimeoutMs?: number;
  /** Largest endpoint set accepted from one answer. Default 256. */
  maxEndpoints?: number;
  log?: Logger;
}

type Listener = (endpoints: readonly DnsEndpoint[]) => void;

const NOT_FOUND = new Set(["ENOTFOUND", "ENODATA", "NXDOMAIN", "NODATA"]);

interface Answer {
  endpoints: DnsEndpoint[];
  /** Smallest TTL seen, seconds; undefined when the answer carried none (SRV without A lookups). */
  ttl: number | undefined;
}

class NotFound extends Error {}

export class DnsDiscovery {
  readonly target: DnsTarget;
  private readonly resolver: Resolver;
  private readonly minRefreshMs: number;
  private readonly maxRefreshMs: number;
  private readonly retryMs: number;
  private readonly maxEndpoints: number;
  private readonly log: Logger;
  private current: readonly DnsEndpoint[] = [];
  private listeners = new Set<Listener>();
  private timer: ReturnType<typeof setTimeout> | undefined;
  private inflight: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  private first: Promise<void> | undefined;
  private lastError: string | undefined;

  /** `target` is the upstream's `dns:` value, e.g. "greeter-headless.default.svc.cluster.local:50051". */
  constructor(target: string, opts: DnsDiscoveryOptions = {}) {
    this.target = parseDnsTarget(target);
    this.minRefreshMs = opts.minRefreshMs ?? 1000;
    this.maxRefreshMs = Math.max(opts.maxRefreshMs ?? 30_000, this.minRefreshMs);
    this.retryMs = opts.retryMs ?? 500;
    this.maxEndpoints = opts.maxEndpoints ?? 256;
    this.log = (opts.log ?? logger("discovery")).child({ dns: target });
    // node:dns/promises only for an upstream with dns: (loaded on first use, see ../tls.ts on why).
    const { Resolver: DnsResolver } = require("node:dns/promises") as typeof import("node:dns/promises");
    this.resolver = new DnsResolver({ timeout: opts.queryTimeoutMs ?? 2000, tries: 2 });
    const servers = opts.servers ?? process.env.MESH_DNS_SERVERS;
    if (servers !== undefined && servers !== "") {
      this.resolver.setServers(parseDnsServers(servers, opts.servers === undefined ? "MESH_DNS_SERVERS" : "DNS servers"));
    }
    if (this.target.kind === "ip") this.current = [{ host: this.target.host, port: this.target.port }];
  }

  /** The endpoints in force now (sorted; empty until the first answer, or when the name does not exist). */
  get endpoints(): readonly DnsEndpoint[] {
    return this.current;
  }

  /** Why the last lookup failed, if it did (for /status and error messages). */
  get error(): string | undefined {
    return this.lastError;
  }

  /** Called with the new set whenever it changes. Returns an unsubscribe function. */
  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Starts resolving; resolves once the first lookup finished, whether it found endpoints or not. */
  start(): Promise<void> {
    this.first ??= this.target.kind === "ip" ? Promise.resolve() : this.refresh();
    return this.first;
  }

  /** Resolves now (e.g. when every endpoint was ejected), instead of waiting for the TTL. */
  refresh(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.inflight ??= this.runOnce().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.resolver.cancel();
    this.listeners.clear();
  }

  private async runOnce(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    let nextMs: number;
    try {
      const answer = await this.lookup();
      if (this.closed) return;
      this.failures = 0;
      this.lastError = undefined;
      this.publish(answer.endpoints);
      const ttlMs = answer.ttl === undefined ? this.maxRefreshMs : answer.ttl * 1000;
      nextMs = Math.min(this.maxRefreshMs, Math.max(this.minRefreshMs, ttlMs));
    } catch (e) {
      if (this.closed) return;
      this.failures++;
      if (e instanceof NotFound) {
        this.lastError = e.message;
        if (this.current.length > 0) this.log.warn({ reason: e.message }, "upstream name has no records now; no endpoints until it does");
        this.publish([]);
      } else {
        this.lastError = `DNS lookup of ${this.target.kind === "ip" ? "" : this.target.name} failed: ${(e as Error).message}`;
        // Logged on the first failure of a run only: a dead DNS server must not flood the log.
        if (this.failures === 1) this.log.warn({ err: (e as Error).message, kept: this.current.length }, "DNS lookup failed; keeping the last endpoints");
      }
      nextMs = Math.min(this.maxRefreshMs, this.retryMs * 2 ** Math.min(this.failures - 1, 16));
    }
    this.timer = setTimeout(() => void this.refresh(), nextMs);
    this.timer.unref?.();
  }

  private publish(found: DnsEndpoint[]): void {
    const next = found.sort(compareEndpoints);
    if (sameEndpoints(next, this.current)) return;
    this.current = next;
    this.log.info({ endpoints: next.map(formatEndpoint) }, "upstream endpoints changed");
    for (const fn of this.listeners) {
      try {
        fn(next);
      } catch (e) {
        this.log.error({ err: (e as Error).message }, "endpoint listener threw");
      }
    }
  }

  private lookup(): Promise<Answer> {
    const t = this.target;
    if (t.kind === "ip") return Promise.resolve({ endpoints: [{ host: t.host, port: t.port }], ttl: undefined });
    if (t.kind === "a") return this.lookupAddresses(t.name, t.port);
    return this.lookupSrv(t.name, t.fallbackPort);
  }

  /** A and AAAA of `name`; "not found" only when neither family has records. */
  private async lookupAddresses(name: string, port: number): Promise<Answer> {
    const [v4, v6] = await Promise.allSettled([
      this.resolver.resolve4(name, { ttl: true }),
      this.resolver.resolve6(name, { ttl: true }),
    ]);
    const records = [...(v4.status === "fulfilled" ? v4.value : []), ...(v6.status === "fulfilled" ? v6.value : [])];
    if (records.length === 0) {
      const errs = [v4, v6].filter((r): r is PromiseRejectedResult => r.status === "rejected").map((r) => r.reason as NodeJS.ErrnoException);
      if (errs.length > 0 && errs.every((e) => NOT_FOUND.has(String(e.code)))) throw new NotFound(`${name} has no A/AAAA records`);
      const hard = errs.find((e) => !NOT_FOUND.has(String(e.code)));
      if (hard) throw hard;
      throw new NotFound(`${name} has no A/AAAA records`);
    }
    const endpoints: DnsEndpoint[] = [];
    const seen = new Set<string>();
    let ttl: number | undefined;
    for (const r of records) {
      if (!isIP(r.address) || seen.has(r.address)) continue;
      seen.add(r.address);
      // Bun 1.4.5 leaves ttl undefined past the 256th record of an answer; such records do not pace refreshes.
      if (Number.isFinite(r.ttl) && r.ttl >= 0) ttl = ttl === undefined ? r.ttl : Math.min(ttl, r.ttl);
      if (endpoints.length < this.maxEndpoints) endpoints.push({ host: r.address, port });
    }
    if (seen.size > this.maxEndpoints) this.log.warn({ answered: seen.size, kept: this.maxEndpoints }, "DNS answer larger than maxEndpoints; extra records ignored");
    return { endpoints, ttl };
  }

  /** SRV records (lowest priority group), then each target's addresses. */
  private async lookupSrv(name: string, fallbackPort: number): Promise<Answer> {
    let records;
    try {
      records = await this.resolver.resolveSrv(name);
    } catch (e) {
      if (NOT_FOUND.has(String((e as NodeJS.ErrnoException).code))) throw new NotFound(`${name} has no SRV records`);
      throw e;
    }
    if (records.length === 0) throw new NotFound(`${name} has no SRV records`);
    const best = Math.min(...records.map((r) => r.priority));
    const targets = new Map<string, number>();
    for (const r of records) {
      if (r.priority !== best) continue;
      const port = r.port === 0 ? fallbackPort : r.port;
      if (port < 1 || port > 65535 || !r.name) continue;
      if (targets.size >= this.maxEndpoints) break;
      targets.set(`${r.name}\0${port}`, port);
    }
    const endpoints: DnsEndpoint[] = [];
    const seen = new Set<string>();
    let ttl: number | undefined;
    let lastError: unknown;
    // Sequential on purpose: SRV sets are small and a burst of parallel queries at a small DNS server
    // is how lookups start timing out.
    for (const key of targets.keys()) {
      const [target, portText] = key.split("\0") as [string, string];
      const port = Number(portText);
      const targetIp = isIP(target) ? [{ host: target, port }] : undefined;
      try {
        const a = targetIp ? { endpoints: targetIp, ttl: undefined } : await this.lookupAddresses(target, port);
        if (a.ttl !== undefined) ttl = ttl === undefined ? a.ttl : Math.min(ttl, a.ttl);
        for (const ep of a.endpoints) {
          const id = formatEndpoint(ep);
          if (seen.has(id) || endpoints.length >= this.maxEndpoints) continue;
          seen.add(id);
          endpoints.push(ep);
        }
      } catch (e) {
        lastError = e;
      }
    }
    if (endpoints.length === 0) {
      if (lastError && !(lastError instanceof NotFound)) throw lastError;
      throw new NotFound(`the SRV targets of ${name} have no addresses`);
    }
    return { endpoints, ttl };
  }
}

export function formatEndpoint(ep: DnsEndpoint): string {
  return isIP(ep.host) === 6 ? `[${ep.host}]:${ep.port}` : `${ep.host}:${ep.port}`;
}

function compareEndpoints(a: DnsEndpoint, b: DnsEndpoint): number {
  return a.host < b.host ? -1 : a.host > b.host ? 1 : a.port - b.port;
}

function sameEndpoints(a: readonly DnsEndpoint[], b: readonly DnsEndpoint[]): boolean {
  return a.length === b.length && a.every((ep, i) => ep.host === b[i]!.host && ep.port === b[i]!.port);
}
