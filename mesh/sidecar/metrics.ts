// Prometheus metrics of one sidecar (prom-client, own registry). Names are mesh_*; every label set is
// bounded: methods come from the pod's protos (anything else is counted as "other"), codes are gRPC's.
import type * as Prom from "prom-client";
import { ProcessTracker, sampleProcess } from "../../runtime/procstat.ts";
import type { TransportStats } from "../../runtime/transport/types.ts";
import { statusName } from "../../runtime/rpc/status.ts";
import { accessLogDroppedLines } from "./access-log.ts";

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

const DURATION_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

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
  readonly connectionErrors: Counter<"code">;
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
      buckets: DURATION_BUCKETS,
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
    this.connectionErrors = new Counter({
      name: "mesh_inbound_connection_errors_total",
      help: "Client connections the inbound port ended with an HTTP/2 connection error (GOAWAY), by code: PROTOCOL_ERROR etc. for broken HTTP/2, ENHANCE_YOUR_CALM for floods (rapid reset, control frames, empty frames)",
      labelNames: ["code"],
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
      name: "mesh_access_log_dropped_lines_total",
      help: "Access-log lines dropped because stderr's reader fell more than 64 MiB behind, or stderr failed",
      registers: r,
      collect() {
        this.reset();
        this.inc(accessLogDroppedLines());
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

  // Per-call recording without prom-client's per-call work: a labels child still validates and hashes
  // its labels object on every inc()/observe(). Here each (direction, method) has one cell, found with
  // two Map lookups on strings the caller already has: counts go into plain numbers, handed to the
  // prom-client counters when /metrics is read (collect), and the histogram's own entry for that label
  // set is updated in place exactly as Histogram.observe() does (same buckets, sum, count).
  private readonly cells = { inbound: new Map<string, CallCell>(), outbound: new Map<string, CallCell>() };
  private flushHooked = false;

  private cell(direction: Direction, method: string): CallCell {
    const map = this.cells[direction];
    let c = map.get(method);
    if (c === undefined) {
      c = new CallCell(direction, method, histogramEntry(this.duration, { direction, method }), DURATION_BUCKETS);
      map.set(method, c);
      this.hookFlush();
    }
    return c;
  }

  /** Pending counts reach prom-client whenever the registry is read. */
  private hookFlush(): void {
    if (this.flushHooked) return;
    this.flushHooked = true;
    const requests = this.requests;
    const attempts = this.attempts;
    const cells = this.cells;
    const attemptCells = this.attemptCells;
    const flush = () => {
      for (const map of [cells.inbound, cells.outbound]) for (const c of map.values()) c.flush(requests);
      for (const byEndpoint of attemptCells.values()) for (const a of byEndpoint.values()) a.flush(attempts);
    };
    (requests as unknown as { collect?: () => void }).collect = flush;
    (attempts as unknown as { collect?: () => void }).collect = flush;
    (this.duration as unknown as { collect?: () => void }).collect = flush;
  }

  /** Records one finished call. */
  observe(direction: Direction, method: string, code: number, seconds: number): void {
    if (!(code >>> 0 < 17)) {
      // Not one of gRPC's codes: counted directly (rare; prom-client's own path).
      this.requests.inc({ direction, method, code: statusName(code) });
      this.duration.observe({ direction, method }, seconds);
      return;
    }
    this.cell(direction, method).record(code, seconds);
  }

  /** service → endpoint → counts. */
  private readonly attemptCells = new Map<string, Map<string, AttemptCell>>();

  /** Records one attempt to an upstream endpoint. */
  attempt(service: string, endpoint: string, code: number): void {
    if (!(code >>> 0 < 17)) {
      // Not one of gRPC's codes (an upstream may send any number): counted directly.
      this.attempts.inc({ service, endpoint, code: statusName(code) });
      return;
    }
    let byEndpoint = this.attemptCells.get(service);
    if (byEndpoint === undefined) this.attemptCells.set(service, (byEndpoint = new Map()));
    let a = byEndpoint.get(endpoint);
    if (a === undefined) {
      byEndpoint.set(endpoint, (a = new AttemptCell(service, endpoint)));
      this.hookFlush();
    }
    a.counts.add(code);
  }

  /** Forgets an endpoint's cached attempt counts (it left the endpoint set), after handing them over. */
  forgetEndpoint(service: string, endpoint: string): void {
    const byEndpoint = this.attemptCells.get(service);
    const a = byEndpoint?.get(endpoint);
    if (a === undefined) return;
    a.flush(this.attempts);
    byEndpoint!.delete(endpoint);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** The histogram's entry for one label set, as prom-client keeps it (made with zero()). */
interface HistogramEntry {
  labels: Record<string, string>;
  bucketValues: Record<number, number>;
  sum: number;
  count: number;
}

function histogramEntry(h: Histogram<string>, labels: Record<string, string>): HistogramEntry {
  const internal = h as unknown as { hashMap: Record<string, HistogramEntry> };
  const existing = Object.values(internal.hashMap).find((e) => e.labels.direction === labels.direction && e.labels.method === labels.method);
  if (existing) return existing;
  h.zero(labels);
  const made = Object.values(internal.hashMap).find((e) => e.labels === labels);
  if (!made) throw new Error("prom-client Histogram.zero() did not make an entry: its internals changed");
  return made;
}

/** Calls by gRPC code (0..16) since the last drain: what a cell hands to a prom-client counter. */
class CodeCounts {
  private readonly counts = new Float64Array(17);
  private dirty = false;

  add(code: number): void {
    this.counts[code]!++;
    this.dirty = true;
  }

  /** Gives `inc` each code counted since the last drain, with its count, and starts again from zero. */
  drain(inc: (code: number, n: number) => void): void {
    if (!this.dirty) return;
    this.dirty = false;
    const c = this.counts;
    for (let code = 0; code < c.length; code++) {
      const n = c[code]!;
      if (n === 0) continue;
      c[code] = 0;
      inc(code, n);
    }
  }
}

/** Counts of one (direction, method): requests by code since the last flush, and its histogram entry. */
class CallCell {
  private readonly pending = new CodeCounts();
  private readonly labels: ({ direction: string; method: string; code: string } | undefined)[] = [];
  /**
   * Calls per bucket since the last flush, by bound index. The entry's bucketValues is keyed by the
   * bound itself, a fraction such as 0.005: each increment there turned the number into a property
   * name in the runtime (~1.2 % of a sidecar's CPU at 1,000 calls/s in perf). Sum and count are still
   * added to the entry per call, in prom-client's order, so the float sum comes out the same.
   */
  private readonly pendingBuckets: Float64Array;
  private bucketsDirty = false;

  constructor(
    private readonly direction: Direction,
    private readonly method: string,
    private readonly hist: HistogramEntry,
    private readonly bounds: readonly number[],
  ) {
    this.pendingBuckets = new Float64Array(bounds.length);
  }

  /** `code` is 0..16. */
  record(code: number, seconds: number): void {
    this.pending.add(code);
    // What Histogram.observe() does to the entry (its bucket counts are per bound, not cumulative).
    const h = this.hist;
    const bounds = this.bounds;
    if (!Number.isFinite(seconds)) return;
    for (let i = 0; i < bounds.length; i++) {
      if (seconds <= bounds[i]!) {
        this.pendingBuckets[i]!++;
        this.bucketsDirty = true;
        break;
      }
    }
    h.sum += seconds;
    h.count += 1;
  }

  /** Hands pending request counts to `requests` and pending bucket counts to the histogram entry. */
  flush(requests: Counter<"direction" | "method" | "code">): void {
    this.pending.drain((code, n) => requests.inc((this.labels[code] ??= { direction: this.direction, method: this.method, code: statusName(code) }), n));
    if (!this.bucketsDirty) return;
    this.bucketsDirty = false;
    const pending = this.pendingBuckets;
    for (let i = 0; i < pending.length; i++) {
      if (pending[i] === 0) continue;
      this.hist.bucketValues[this.bounds[i]!]! += pending[i]!;
      pending[i] = 0;
    }
  }
}

/** Attempts to one endpoint of one service by code, since the last flush. */
class AttemptCell {
  readonly counts = new CodeCounts();

  constructor(
    readonly service: string,
    readonly endpoint: string,
  ) {}

  flush(attempts: Counter<"service" | "endpoint" | "code">): void {
    this.counts.drain((code, n) => attempts.inc({ service: this.service, endpoint: this.endpoint, code: statusName(code) }, n));
  }
}
