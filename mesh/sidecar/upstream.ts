// One upstream service from mesh.yaml: its endpoints (kept current by a Resolver), a gRPC client per
// endpoint (grpc/client.ts: one HTTP/2 connection, pass-through bytes, mTLS when configured) and the
// policies that decide where a call goes.
import type { UpstreamConfig } from "../config/index.ts";
import { logger } from "../../runtime/log.ts";
import { type Balancer, makeBalancer } from "./balancer.ts";
import { CircuitBreaker } from "./breaker.ts";
import { type Endpoint, newEndpoint } from "./endpoint.ts";
import { GrpcClient } from "./grpc/client.ts";
import type { SidecarMetrics } from "./metrics.ts";
import { OutlierDetector } from "./outlier.ts";
import { makeResolver, type Resolver } from "./resolver.ts";
import { RetryBudget, type RetryPolicy, retryPolicyFromConfig } from "./retry.ts";
import type { MeshTls } from "./tls.ts";

const log = logger("upstream");

export interface EndpointConn extends Endpoint {
  client: GrpcClient;
}

export interface UpstreamDeps {
  metrics: SidecarMetrics;
  tls: MeshTls | undefined;
  maxMessageBytes: number;
  /** Makes the resolver for this upstream (default: static endpoints or DNS). */
  resolverFor?: (u: UpstreamConfig) => Resolver;
}

export class UpstreamCluster {
  readonly service: string;
  readonly timeoutMs: number;
  readonly retry: RetryPolicy;
  readonly budget: RetryBudget;
  readonly breaker: CircuitBreaker;
  readonly outlier: OutlierDetector;
  readonly metrics: SidecarMetrics;
  endpoints: EndpointConn[] = [];
  private readonly balancer: Balancer;
  private readonly resolver: Resolver;
  private readonly scratch: Endpoint[] = [];

  constructor(
    readonly config: UpstreamConfig,
    private readonly deps: UpstreamDeps,
  ) {
    this.service = config.service;
    this.metrics = deps.metrics;
    this.timeoutMs = config.timeout_ms;
    this.retry = retryPolicyFromConfig(config.retries);
    this.budget = new RetryBudget(config.retries.budget_percent, config.retries.min_retries_per_second);
    this.breaker = new CircuitBreaker(config.service, config.circuit_breaker.max_concurrent, config.circuit_breaker.max_pending);
    this.balancer = makeBalancer(config.lb);
    this.outlier = new OutlierDetector(
      {
        consecutiveFailures: config.outlier_detection.consecutive_failures,
        baseEjectionMs: config.outlier_detection.base_ejection_ms,
        maxEjectionPercent: config.outlier_detection.max_ejection_percent,
      },
      Date.now,
      (e, forMs) => {
        deps.metrics.ejections.inc({ service: this.service, endpoint: e.address });
        log.warn({ service: this.service, endpoint: e.address, ejected_ms: forMs }, `ejected ${e.address} from ${this.service} for ${forMs} ms after consecutive failures`);
      },
    );
    this.resolver = (deps.resolverFor ?? ((u) => makeResolver(u)))(config);
  }

  start(): void {
    this.resolver.start((addresses) => this.setAddresses(addresses));
  }

  /** Replaces the endpoint set, keeping the clients (and their counters) of addresses that stay. */
  setAddresses(addresses: readonly string[]): void {
    const keep = new Map(this.endpoints.map((e) => [e.address, e]));
    const next: EndpointConn[] = [];
    for (const address of new Set(addresses)) {
      const existing = keep.get(address);
      if (existing) {
        keep.delete(address);
        next.push(existing);
        continue;
      }
      const tls = this.deps.tls;
      const client = new GrpcClient({ address, maxMessageBytes: this.deps.maxMessageBytes, tls: tls ? () => tls.context() : undefined });
      next.push(Object.assign(newEndpoint(address), { client }));
    }
    for (const gone of keep.values()) {
      gone.client.close();
      this.deps.metrics.ejected.remove({ service: this.service, endpoint: gone.address });
      this.deps.metrics.forgetEndpoint(this.service, gone.address);
    }
    this.endpoints = next;
    log.info({ service: this.service, endpoints: next.map((e) => e.address) }, `${this.service}: ${next.length} endpoint(s)`);
  }

  /** The endpoint for the next attempt, or undefined when none is resolved. */
  pick(): EndpointConn | undefined {
    if (this.endpoints.length === 0) return undefined;
    return this.balancer.pick(this.outlier.healthy(this.endpoints, this.scratch)) as EndpointConn | undefined;
  }

  /** Pushes breaker and ejection state into the gauges (called when /metrics is scraped). */
  exportState(): void {
    const m = this.deps.metrics;
    const labels = { service: this.service };
    m.breakerOpen.set(labels, this.breaker.open ? 1 : 0);
    m.breakerActive.set(labels, this.breaker.active);
    m.breakerPending.set(labels, this.breaker.pending);
    m.endpoints.set(labels, this.endpoints.length);
    for (const e of this.endpoints) m.ejected.set({ service: this.service, endpoint: e.address }, this.outlier.isEjected(e) ? 1 : 0);
  }

  close(): void {
    this.resolver.close();
    this.breaker.failPending(`upstream ${this.service} is shutting down`);
    for (const e of this.endpoints) e.client.close();
    this.endpoints = [];
  }
}
