// bench-mesh's production-grade peer: nginx's gRPC proxy (ngx_http_grpc_module) in a sidecar's place.
// Envoy, the proxy Istio's 0.20 vCPU per 1k rps is measured on, is not packaged for Debian; nginx-light
// is, and like Envoy it is a maintained C proxy that terminates HTTP/2 on both sides (parses frames and
// HPACK from the client, re-encodes toward the server). Measured in the same run as the sidecars, it
// tells whether issue 5's 0.1 is reachable on this machine by anything that parses HTTP/2, which the
// byte-forwarding C proxy (bench/c/tcp-proxy.c) cannot say.
//
// One process (master_process off), so the pid returned is the one doing the work and /proc counts all
// of its CPU. Everything it writes (config, pid file, temp dirs, access log) is in a scratch dir of
// `res`, and `res` kills it on any exit of the caller; stopNginx() is the graceful way (SIGQUIT).
import { existsSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { canConnect } from "../../runtime/transport/probe.ts";
import { type Spawned, type TestResources, waitFor } from "../../test/helpers.ts";

export const NGINX_FIX = "apt-get install nginx-light";

/** The nginx executable: PATH first, then /usr/sbin (Debian's place, which a non-root PATH often lacks). */
export function findNginx(): string | undefined {
  return Bun.which("nginx") ?? (existsSync("/usr/sbin/nginx") ? "/usr/sbin/nginx" : undefined);
}

export interface NginxProxy {
  port: number;
  pid: number;
  dir: string;
  proc: Spawned;
}

export interface NginxOptions {
  /** host:port of the gRPC server (h2c) every call goes to. */
  upstream: string;
  /** Buffered access log of every call (the sidecars log every call too). Default on. */
  accessLog?: boolean;
  /**
   * Reuse upstream connections (keepalive 16). Default on. Off only in front of a Bun HTTP/2 server:
   * see BUN_UPSTREAM_KEEPALIVE.
   */
  upstreamKeepalive?: boolean;
  /** Deadline for nginx to listen, per attempt. */
  timeoutMs?: number;
}

/** The config. Each setting that differs from nginx's default is there to keep it from doing what a sidecar would not. */
export function nginxConfig(dir: string, port: number, upstream: string, accessLog: boolean, upstreamKeepalive = true): string {
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"].map((k) => `  ${k}_temp_path ${join(dir, `${k}_temp`)};`).join("\n");
  return `# Written by mesh/sidecar/bench-nginx.ts for bench-mesh's "via 2 nginx gRPC proxies" path.
master_process off;
daemon off;
worker_processes 1;
pid ${join(dir, "nginx.pid")};
error_log stderr warn;

events {
  worker_connections 1024;
}

http {
${temp}
  ${accessLog ? `access_log ${join(dir, "access.log")} combined buffer=64k flush=250ms;` : "access_log off;"}

  # nginx closes a client connection after 1000 requests by default (GOAWAY, then the client
  # reconnects): at 1000 rps that is a new connection every second, which a sidecar never makes.
  keepalive_requests 1000000000;
  keepalive_timeout 1h;
  # Hold no small write back for more data: responses go out as soon as they are whole, as a sidecar's do.
  postpone_output 0;

  upstream grpc_upstream {
    server ${upstream};
    # ngx_http_grpc_module sends one call per upstream connection (always stream 1), so reuse is
    # serial: without keepalive every call would open a connection; with it, nginx keeps as many as
    # the most calls it has had in flight at once, up to 16 (in a 1000 rps bench-mesh run: 15
    # connections, opened in the first bursts and reused to the end, none opened per call).
    # The same 1000-request default applies here.
${upstreamKeepalive ? "    keepalive 16;\n    keepalive_requests 1000000000;\n    keepalive_timeout 1h;\n" : ""}  }

  server {
    # h2c with prior knowledge, as grpc-js and the sidecars speak it.
    listen 127.0.0.1:${port} http2;
    location / {
      # The request body is never buffered by this module (it sets request_body_no_buffering) and the
      # response goes through as it arrives (grpc_buffer_size is a read buffer, not a hold), so these
      # defaults are kept. Trailers (grpc-status) are passed through.
      grpc_pass grpc://grpc_upstream;
    }
  }
}
`;
}

/** A port that was free a moment ago: the kernel's choice for a listener on port 0, released at once. */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

/**
 * True when `pid` holds the TCP socket listening on 127.0.0.1:`port`. A connect alone would also
 * succeed if another process took the port between freePort() and nginx's bind (nginx then retries
 * bind for ~2 s before failing), and the bench would measure the wrong process.
 */
function listensOn(pid: number, port: number): boolean {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  let inode: string | undefined;
  for (const line of readFileSync("/proc/net/tcp", "utf8").split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[1] === local && f[3] === "0A") inode = f[9];
  }
  if (!inode) return false;
  const want = `socket:[${inode}]`;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`) === want) return true;
    } catch {
      // closed between the listing and the read
    }
  }
  return false;
}

/**
 * Starts one nginx gRPC proxy in front of `upstream` and resolves once it accepts connections on its
 * port. Retries on a new port when the one picked was taken before nginx could bind it.
 */
export async function startNginxGrpcProxy(res: TestResources, opts: NginxOptions): Promise<NginxProxy> {
  const exe = findNginx();
  if (!exe) throw new Error(`nginx is not installed (needed for the nginx gRPC proxy reference): ${NGINX_FIX}`);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const dir = res.scratchDir("bench-nginx-");
  for (let attempt = 1; ; attempt++) {
    const port = freePort();
    const conf = join(dir, "nginx.conf");
    writeFileSync(conf, nginxConfig(dir, port, opts.upstream, opts.accessLog ?? true, opts.upstreamKeepalive ?? true));
    // -e: the error log before the config is read (the built-in path is outside the scratch dir).
    // res.spawn sets the parent-death signal: a bench killed with SIGKILL leaves no nginx behind either.
    const proc = res.spawn([exe, "-p", dir, "-c", conf, "-e", "stderr"]);
    const pid = proc.proc.pid;
    let inUse = false;
    try {
      await waitFor(
        async () => {
          if (/Address already in use/.test(proc.output())) {
            inUse = true;
            throw new Error("port taken");
          }
          if (proc.proc.exitCode !== null || proc.proc.signalCode !== null) throw new Error(`nginx exited (${proc.proc.exitCode ?? proc.proc.signalCode})`);
          return listensOn(pid, port) && (await canConnect({ hostname: "127.0.0.1", port }));
        },
        { timeoutMs, what: `nginx (pid ${pid}) to accept connections on 127.0.0.1:${port}` },
      );
      return { port, pid, dir, proc };
    } catch (e) {
      proc.proc.kill("SIGKILL");
      await proc.proc.exited;
      if (inUse && attempt < 5) continue;
      throw new Error(`starting nginx (${exe}) as a gRPC proxy to ${opts.upstream} failed: ${(e as Error).message}\n--- nginx output ---\n${proc.output()}`);
    }
  }
}

/** Graceful stop (SIGQUIT: finish open calls, flush the access log), then SIGKILL if it is not gone within the deadline. */
export async function stopNginx(p: NginxProxy, timeoutMs = 5000): Promise<void> {
  const proc = p.proc.proc;
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGQUIT");
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  await proc.exited;
  clearTimeout(timer);
}

/**
 * Whether nginx may keep connections to a gRPC server running on Bun. nginx's gRPC module opens every
 * upstream connection with SETTINGS_HEADER_TABLE_SIZE=0 (no HPACK dynamic table); Bun's node:http2
 * (1.4.5) ignores it and refers to its dynamic table from the second response on a connection, which
 * nginx rejects ("upstream sent invalid http2 table index: 67", 502 to the client, connection closed):
 * oven-sh/bun#19152, fix proposed in oven-sh/bun#43345. So the nginx in front of the Bun grpc-js
 * server opens a connection per call, which costs it (and the server) a connect, an HTTP/2 preface
 * and a close per call that a sidecar does not pay: its CPU figure is an upper bound. The canary in
 * bench-nginx.test.ts fails once Bun is fixed; then set this to true.
 */
export const BUN_UPSTREAM_KEEPALIVE = false;

/**
 * The gRPC server behind the greeter nginx: testdata/direct-echo.ts bundled for and run by Node.js,
 * whose own HTTP/2 honours nginx's SETTINGS_HEADER_TABLE_SIZE=0, so nginx keeps its connections to it
 * as it would to a sidecar (on Bun it cannot: BUN_UPSTREAM_KEEPALIVE). Its address, or undefined when
 * this machine has no `node`.
 */
export async function startNodeEchoServer(res: TestResources): Promise<string | undefined> {
  const node = Bun.which("node");
  if (!node) return undefined;
  const testdata = join(import.meta.dir, "testdata");
  const built = await Bun.build({ entrypoints: [join(testdata, "direct-echo.ts")], target: "node", outdir: res.scratchDir("bench-nginx-echo-") });
  if (!built.success) throw new Error(`bundling testdata/direct-echo.ts for Node.js failed:\n${built.logs.join("\n")}`);
  const server = res.spawn([node, built.outputs[0]!.path], { env: { ECHO_PROTO_PATH: join(testdata, "echo.proto") } });
  return (JSON.parse(await server.waitForLine(/direct-ready/)) as { address: string }).address;
}

export interface NginxPair {
  frontend: NginxProxy;
  greeter: NginxProxy;
  /** Set when the greeter nginx connects per call (a server on Bun): why its CPU is an upper bound. */
  caveat?: string;
}

/**
 * Two nginx proxies chained in the sidecars' places: client → frontend → greeter → `server` (a gRPC
 * server, h2c). Both keep their connections as sidecars do, unless `serverOnBun`: then the greeter nginx
 * has to connect per call (BUN_UPSTREAM_KEEPALIVE), which the caveat says. bench-mesh serves it with
 * startNodeEchoServer where it can.
 */
export async function startNginxPair(res: TestResources, opts: { server: string; serverOnBun: boolean; accessLog: boolean }): Promise<NginxPair> {
  const keepalive = !opts.serverOnBun || BUN_UPSTREAM_KEEPALIVE;
  // The greeter first: the frontend needs its port.
  const greeter = await startNginxGrpcProxy(res, { upstream: opts.server, accessLog: opts.accessLog, upstreamKeepalive: keepalive });
  const frontend = await startNginxGrpcProxy(res, { upstream: `127.0.0.1:${greeter.port}`, accessLog: opts.accessLog });
  return { frontend, greeter, ...(keepalive ? {} : { caveat: NGINX_GREETER_CAVEAT }) };
}

/** "nginx/1.22.1", for the bench's header line ("nginx" when `nginx -v` says nothing usable). */
export function nginxVersion(): string {
  const exe = findNginx();
  if (!exe) return "nginx";
  const r = Bun.spawnSync([exe, "-v"], { stdout: "pipe", stderr: "pipe" });
  return /nginx\/\S+/.exec(r.stderr.toString() + r.stdout.toString())?.[0] ?? "nginx";
}

/**
 * bench-mesh's --nginx: "on" needs nginx (the error names the fix), "off" skips it, no flag means on
 * when nginx is installed, and otherwise off with a note saying how to get it.
 */
export function resolveNginxFlag(flag: "on" | "off" | undefined): { on: boolean; note?: string } {
  if (flag === "off") return { on: false };
  if (findNginx()) return { on: true };
  if (flag === "on") throw new Error(`--nginx on: nginx is not installed: ${NGINX_FIX} (or --nginx off)`);
  return { on: false, note: `bench-mesh: no nginx on this machine, so the "via 2 nginx gRPC proxies" reference is skipped; ${NGINX_FIX} to measure it` };
}

/** The pair's caveat when its greeter nginx has to connect per call (see startNginxPair). */
const NGINX_GREETER_CAVEAT =
  "the greeter nginx opens a connection per call to the Bun grpc-js server (Bun ignores nginx's HPACK table size 0 on a kept connection: oven-sh/bun#19152), which no sidecar pays: the frontend nginx, which keeps its connections, is the like-for-like figure";
