// Prometheus metrics of one sidecar (prom-client, own registry). Names are mesh_*; every label set is
// bounded: methods come from the pod's protos (anything else is counted as "other"), codes are gRPC's.
import type * as Prom from "prom-client";
import { ProcessTracker, sampleProcess } from "../../runtime/procstat.ts";
import type { TransportStats } from "../../runtime/transport/types.ts";
import { statusName } from "../../runtime/rpc/status.ts";

// The four classes from prom-client's own modules, not its index: the index also loads its cluster
// aggregator, pushgateway client and default process metrics (node:cluster, http, https, perf_hooks, v8),
// which the sidecar never uses and which took ~10 MB of RSS (a bare Bun process importing the index:
// 42-43 MB; the four modules: 32 MB). Types still come from the package's declarations.
const Registry = require("prom-client/lib/registry") as typeof Prom.Registry;
const Counter = require("prom-client/lib/counter") as typeof Prom.Counter;
const Gauge = require("prom-client/lib/gauge") as typeof Prom.Gauge;
const Histogram = require("prom-client/lib/histogram") as typeof Prom.Histogram;
type Counter<T extends string> = Prom.Counter<T>;
type Gauge<T extends string> = Prom.Gauge<T>;
type Histogram<T extends string> = Prom.Histogram<T>;

export type Direction = "inbound" | "outbound";

export interface SessionView {
  transport: string;
  stats: TransportStats;
  bufferedBytes: number;
}

export class SidecarMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"direction" | "method" | "code">;
  readonly duration: Histogram<"direction" | "method">;
  readonly retries: Counter<"service">;
  readonly retryBudgetExhausted: Counter<"service">;
  readonly attempts: Counter<"service" | "endpoint" | "code">;
  readonly breakerOpen: Gauge<"service">;
  readonly breakerActive: Gauge<"service">;
  readonly breakerPending: Gauge<"service">;
  readonly breakerRejections: Counter<"service">;
  readonly ejections: Counter<"service" | "endpoint">;
  readonly ejected: Gauge<"service" | "endpoint">;
  readonly endpoints: Gauge<"service">;
  readonly sessionsGauge: Gauge<"transport">;

  constructor(pod: string, sessions: () => readonly SessionView[], upstreamState: () => void, inflight: () => number) {
    this.registry.setDefaultLabels({ pod });
    const r = [this.registry];
    this.requests = new Counter({
      name: "mesh_requests_total",
      help: "Calls finished by this sidecar, by direction (inbound: network → app; outbound: app → upstream), method and gRPC status",
      labelNames: ["direction", "method", "code"],
      registers: r,
    });
    this.duration = new Histogram({
      name: "mesh_request_duration_seconds",
      help: "Call duration as seen by this sidecar, from the first byte in to the status out",
      labelNames: ["direction", "method"],
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: r,
    });
    this.retries = new Counter({ name: "mesh_upstream_retries_total", help: "Retry attempts sent to an upstream service", labelNames: ["service"], registers: r });
    this.retryBudgetExhausted = new Counter({
      name: "mesh_upstream_retry_budget_exhausted_total",
      help: "Retries not made because the retry budget was used up",
      labelNames: ["service"],
      registers: r,
    });
    this.attempts = new Counter({
      name: "mesh_upstream_attempts_total",
      help: "Attempts (first tries and retries) to each upstream endpoint, by gRPC status",
      labelNames: ["service", "endpoint", "code"],
      registers: r,
    });
    this.breakerOpen = new Gauge({
      name: "mesh_circuit_breaker_open",
      help: "1 while the upstream's circuit breaker is at max_concurrent (new calls queue or are refused)",
      labelNames: ["service"],
      registers: r,
      collect: upstreamState,
    });
    this.breakerActive = new Gauge({ name: "mesh_upstream_active_requests", help: "Calls in flight to the upstream service", labelNames: ["service"], registers: r });
    this.breakerPending = new Gauge({ name: "mesh_upstream_pending_requests", help: "Calls waiting for a circuit-breaker slot", labelNames: ["service"], registers: r });
    this.breakerRejections = new Counter({
      name: "mesh_circuit_breaker_rejections_total",
      help: "Calls refused with RESOURCE_EXHAUSTED because max_concurrent and max_pending were reached",
      labelNames: ["service"],
      registers: r,
    });
    this.ejections = new Counter({ name: "mesh_outlier_ejections_total", help: "Times an endpoint was ejected by outlier detection", labelNames: ["service", "endpoint"], registers: r });
    this.ejected = new Gauge({ name: "mesh_outlier_ejected", help: "1 while the endpoint is ejected", labelNames: ["service", "endpoint"], registers: r });
    this.endpoints = new Gauge({ name: "mesh_upstream_endpoints", help: "Endpoints currently resolved for the upstream service", labelNames: ["service"], registers: r });
    new Gauge({
      name: "mesh_requests_in_flight",
      help: "Calls in progress (both directions)",
      registers: r,
      collect() {
        this.set(inflight());
      },
    });

    this.sessionsGauge = new Gauge({
      name: "mesh_app_sessions",
      help: "App sessions connected to this sidecar, by transport in use (uds, shm, rpal)",
      labelNames: ["transport"],
      registers: r,
      collect() {
        this.reset();
        for (const name of ["uds", "shm", "rpal"]) this.set({ transport: name }, 0);
        for (const s of sessions()) this.inc({ transport: s.transport });
      },
    });
    new Gauge({
      // Every numeric field of the live sessions' transport stats: frames and bytes each way, and for
      // shm/rpal the ring figures (doorbells, parks, spin hits/misses, backlogged frames). A gauge, not a
      // counter: sessions come and go, so the sum may drop.
      name: "mesh_transport_stat",
      help: "Transport statistics of the live app sessions (stat = framesSent, bytesReceived, doorbellsSent, parks, spinHits, backlogged, ...)",
      labelNames: ["transport", "stat"],
      registers: r,
      collect() {
        this.reset();
        for (const s of sessions()) {
          for (const [stat, v] of Object.entries(s.stats)) if (typeof v === "number") this.inc({ transport: s.transport, stat }, v);
        }
      },
    });
    new Gauge({
      name: "mesh_transport_buffered_bytes",
      help: "Bytes queued towards the app not yet taken by the transport (ring or socket full)",
      labelNames: ["transport"],
      registers: r,
      collect() {
        this.reset();
        for (const s of sessions()) this.inc({ transport: s.transport }, s.bufferedBytes);
      },
    });

    const pid = process.pid;
    // One tracker for the process's life, so exited threads' counts stay in these counters (a sum of
    // live threads alone would go down, which Prometheus reads as a counter reset).
    const tracker = new ProcessTracker(pid);
    // One /proc read per scrape, shared by the three process metrics below.
    let cached: { at: number; sample: ReturnType<typeof sampleProcess> } | undefined;
    const sample = () => {
      const now = Date.now();
      if (!cached || now - cached.at > 100) cached = { at: now, sample: sampleProcess(pid, tracker) };
      return cached.sample;
    };
    new Counter({
      name: "mesh_process_cpu_seconds_total",
      help: "CPU time (user + system, all threads) of the sidecar process, from /proc",
      registers: r,
      collect() {
        this.reset();
        this.inc(sample().cpuNs / 1e9);
      },
    });
    new Gauge({
      name: "mesh_process_resident_memory_bytes",
      help: "Resident set size of the sidecar process, from /proc",
      registers: r,
      collect() {
        this.set(sample().rssBytes);
      },
    });
    new Gauge({
      name: "mesh_process_heap_bytes",
      help: "JavaScript heap of the sidecar process (used = live objects and garbage not yet collected; total = reserved)",
      labelNames: ["kind"],
      registers: r,
      collect() {
        const m = process.memoryUsage();
        this.set({ kind: "used" }, m.heapUsed);
        this.set({ kind: "total" }, m.heapTotal);
      },
    });
    new Counter({
      name: "mesh_process_context_switches_total",
      help: "Context switches of the sidecar process (all threads), from /proc",
      labelNames: ["kind"],
      registers: r,
      collect() {
        const s = sample();
        this.reset();
        this.inc({ kind: "voluntary" }, s.voluntary);
        this.inc({ kind: "involuntary" }, s.involuntary);
      },
    });
  }

  // Label children cached per label set: prom-client hashes a labels object on every call otherwise.
  private readonly requestChildren = new Map<string, { inc(): void }>();
  private readonly durationChildren = new Map<string, { observe(v: number): void }>();

  /** Records one finished call. */
  observe(direction: Direction, method: string, code: number, seconds: number): void {
    const key = `${direction} ${method}`;
    const rkey = `${key} ${code}`;
    let r = this.requestChildren.get(rkey);
    if (!r) this.requestChildren.set(rkey, (r = this.requests.labels({ direction, method, code: statusName(code) })));
    r.inc();
    let d = this.durationChildren.get(key);
    if (!d) this.durationChildren.set(key, (d = this.duration.labels({ direction, method })));
    d.observe(seconds);
  }

  private readonly attemptChildren = new Map<string, { inc(): void }>();

  /** Records one attempt to an upstream endpoint. */
  attempt(service: string, endpoint: string, code: number): void {
    const key = `${service} ${endpoint} ${code}`;
    let c = this.attemptChildren.get(key);
    if (!c) this.attemptChildren.set(key, (c = this.attempts.labels({ service, endpoint, code: statusName(code) })));
    c.inc();
  }

  /** Forgets an endpoint's attempt counters' cached children (it left the endpoint set). */
  forgetEndpoint(service: string, endpoint: string): void {
    const prefix = `${service} ${endpoint} `;
    for (const k of this.attemptChildren.keys()) if (k.startsWith(prefix)) this.attemptChildren.delete(k);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
