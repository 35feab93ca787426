// The sidecar of one pod, composed: app sessions on the Unix socket, the inbound gRPC server, the
// outbound router with its upstream clusters, and the admin port. main.ts runs it as a process; tests
// can run it in-process too.
import type { Server } from "bun";
import type { PodConfig } from "../config/index.ts";
import { logger } from "../../runtime/log.ts";
import type { RpcChannel } from "../../runtime/rpc/channel.ts";
import type { ChannelSettings } from "../../runtime/rpc/types.ts";
import { acceptApps, type AppSession } from "../../runtime/sdk/sidecar.ts";
import type { TransportChoice } from "../../runtime/transport/types.ts";
import type { UnixListener } from "../../runtime/transport/uds.ts";
import { redactConfig, startAdmin } from "./admin.ts";
import { InboundServer } from "./inbound.ts";
import { InflightTracker } from "./inflight.ts";
import { SidecarMetrics } from "./metrics.ts";
import { makeOutboundHandler } from "./outbound.ts";
import type { MethodInfo } from "./protos.ts";
import { checkTlsFiles, MeshTls } from "./tls.ts";
import { UpstreamCluster } from "./upstream.ts";

const log = logger("sidecar");

export interface SidecarOptions {
  pod: PodConfig;
  /** Directory of mesh.yaml: protos and tls paths are relative to it. */
  baseDir: string;
  appSocket: string;
  /** Overrides sidecar.transport (CLI --transport / MESH_TRANSPORT). */
  transport?: TransportChoice;
  /** The methods of the pod's protos by path (see config-loader.ts, which loads them). */
  methods: Map<string, MethodInfo>;
}

export interface ReadyInfo {
  event: "ready";
  pod: string;
  inbound: string | null;
  admin: string;
  app_socket: string;
}

export class Sidecar {
  readonly metrics: SidecarMetrics;
  readonly methods: Map<string, MethodInfo>;
  readonly clusters = new Map<string, UpstreamCluster>();
  private readonly inflight = new InflightTracker();
  private readonly tls: MeshTls | undefined;
  private readonly sessions: AppSession[] = [];
  private inbound: InboundServer | undefined;
  private listener: UnixListener | undefined;
  private admin: Server<undefined> | undefined;
  private listening = false;
  private draining = false;
  private nextApp = 0;
  private readonly transportChoice: TransportChoice;
  private readonly settings: ChannelSettings;

  constructor(private readonly opts: SidecarOptions) {
    const sc = opts.pod.sidecar;
    this.transportChoice = opts.transport ?? sc.transport;
    this.settings = { maxMessageBytes: sc.max_message_bytes, initialWindowBytes: 1024 * 1024, maxConcurrentCalls: 1024 };
    this.methods = opts.methods;
    this.tls = sc.tls ? new MeshTls(checkTlsFiles(sc.tls, opts.baseDir)) : undefined;
    this.metrics = new SidecarMetrics(
      opts.pod.name,
      () => this.sessions.map((s) => ({ transport: s.transport, stats: s.dataTransport.stats, bufferedBytes: s.dataTransport.bufferedBytes })),
      () => {
        for (const c of this.clusters.values()) c.exportState();
      },
      () => this.inflight.count,
    );
    for (const u of sc.upstreams) {
      this.clusters.set(u.service, new UpstreamCluster(u, { metrics: this.metrics, tls: this.tls, maxMessageBytes: sc.max_message_bytes }));
    }
  }

  get podName(): string {
    return this.opts.pod.name;
  }

  /** Starts everything; resolves with the ready line's fields (actual ports). */
  async start(): Promise<ReadyInfo> {
    const sc = this.opts.pod.sidecar;
    for (const c of this.clusters.values()) c.start();
    const outbound = makeOutboundHandler({
      pod: this.podName,
      clusters: this.clusters,
      methods: this.methods,
      metrics: this.metrics,
      inflight: this.inflight,
    });
    this.listener = await acceptApps({
      socketPath: this.opts.appSocket,
      transport: this.transportChoice,
      settings: this.settings,
      onSession: (session) => this.addSession(session, outbound),
    });
    let inboundAddr: string | null = null;
    if (sc.inbound) {
      this.inbound = new InboundServer({
        pod: this.podName,
        methods: this.methods,
        pickApp: () => this.pickApp(),
        metrics: this.metrics,
        inflight: this.inflight,
        maxMessageBytes: sc.max_message_bytes,
        maxConcurrentCalls: this.settings.maxConcurrentCalls,
        tls: this.tls,
      });
      const port = await this.inbound.listen(sc.inbound.host, sc.inbound.port);
      inboundAddr = `${sc.inbound.host}:${port}`;
    }
    this.admin = startAdmin(sc.admin.host, sc.admin.port, {
      notReadyReason: () => this.notReadyReason(),
      metricsText: () => this.metrics.text(),
      metricsContentType: this.metrics.contentType,
      effectiveConfig: () => redactConfig(this.opts.pod),
      status: () => this.status(),
    });
    this.listening = true;
    return { event: "ready", pod: this.podName, inbound: inboundAddr, admin: `${sc.admin.host}:${this.admin.port}`, app_socket: this.opts.appSocket };
  }

  private addSession(session: AppSession, handler: ReturnType<typeof makeOutboundHandler>): void {
    if (this.draining) {
      session.close("sidecar is draining");
      return;
    }
    session.channel.setHandler(handler);
    this.sessions.push(session);
    void session.closed.then(() => {
      const i = this.sessions.indexOf(session);
      if (i >= 0) this.sessions.splice(i, 1);
    });
  }

  /** The session for the next inbound call: round robin over live sessions not draining. */
  private pickApp(): RpcChannel | undefined {
    const n = this.sessions.length;
    for (let i = 0; i < n; i++) {
      const s = this.sessions[(this.nextApp + i) % n]!;
      if (s.channel.isOpen && !s.channel.peerIsDraining) {
        this.nextApp = (this.nextApp + i + 1) % n;
        return s.channel;
      }
    }
    return undefined;
  }

  notReadyReason(): string | undefined {
    if (this.draining) return "draining";
    if (!this.listening) return "starting";
    if (this.opts.pod.sidecar.inbound && !this.pickApp()) return "no app session yet (the app has not connected)";
    return undefined;
  }

  status(): { pod: string; ready: boolean; draining: boolean; sessions: { app: string; transport: string }[]; transport: string | null; inflight: number } {
    return {
      pod: this.podName,
      ready: this.notReadyReason() === undefined,
      draining: this.draining,
      sessions: this.sessions.map((s) => ({ app: s.appName ?? "app", transport: s.transport })),
      transport: this.sessions[this.sessions.length - 1]?.transport ?? null,
      inflight: this.inflight.count,
    };
  }

  /**
   * Graceful drain: stop accepting (inbound GOAWAY, no new app sessions, GOAWAY to the app), let calls in
   * flight finish within drain_seconds, then close everything.
   */
  async drain(): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    const graceMs = this.opts.pod.sidecar.drain_seconds * 1000;
    log.info({ inflight: this.inflight.count, grace_ms: graceMs }, "draining");
    // The app listener stays open until the end: stopping it closes every live connection too, which
    // would cut the calls in flight. New sessions are refused by addSession while draining.
    const inboundDone = this.inbound?.drain() ?? Promise.resolve();
    const appsDone = Promise.all(this.sessions.map((s) => s.channel.goaway(graceMs)));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = await Promise.race([
      Promise.all([inboundDone, appsDone, this.inflight.idle()]).then(() => false),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(true), graceMs))),
    ]);
    clearTimeout(timer);
    if (timedOut) log.warn({ inflight: this.inflight.count }, `drain grace of ${graceMs} ms over: cancelling ${this.inflight.count} call(s)`);
    this.stop();
  }

  /** Closes everything at once. */
  stop(): void {
    this.listener?.stop();
    this.inbound?.forceStop();
    for (const s of [...this.sessions]) s.close("sidecar stopping");
    for (const c of this.clusters.values()) c.close();
    this.tls?.close();
    void this.admin?.stop(true);
  }
}
