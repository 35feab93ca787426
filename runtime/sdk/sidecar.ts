// The sidecar-side SDK: accept app sessions on the pod's Unix socket. Each session is an RpcChannel:
// call the app's services with `session.channel.unary/startCall`, and receive the app's outbound calls
// with `session.channel.setHandler`.
import { logger } from "../log.ts";
import { RpcChannel } from "../rpc/channel.ts";
import type { ChannelSettings } from "../rpc/types.ts";
import { acceptAppSessions } from "../transport/negotiate.ts";
import type { Transport, TransportChoice, TransportName } from "../transport/types.ts";
import type { UnixListener } from "../transport/uds.ts";

const log = logger("sidecar-sdk");

export interface AppSession {
  readonly id: number;
  readonly channel: RpcChannel;
  readonly transport: TransportName;
  /** The data transport (for its stats: frames, bytes, doorbells). */
  readonly dataTransport: Transport;
  readonly appName: string | undefined;
  readonly startedAt: number;
  /** Resolves when the session is over (the app went away, or close()). */
  readonly closed: Promise<Error | undefined>;
  close(reason?: string): void;
}

export interface AcceptAppsOptions {
  socketPath: string;
  transport?: TransportChoice;
  settings?: ChannelSettings;
  onSession(session: AppSession): void;
  onRejected?(reason: string): void;
}

let nextSessionId = 1;

export async function acceptApps(opts: AcceptAppsOptions): Promise<UnixListener> {
  return await acceptAppSessions({
    socketPath: opts.socketPath,
    transport: opts.transport,
    settings: opts.settings,
    onRejected: opts.onRejected,
    onSession(s) {
      // Started only after onSession has set its handler: the app may call right after the handshake.
      const channel = new RpcChannel(s.transport, {
        initiator: false,
        local: s.local,
        peer: s.peer,
        peerName: `app ${s.hello.appName ?? ""}`.trim(),
        deferStart: true,
      });
      const session: AppSession = {
        id: nextSessionId++,
        channel,
        transport: s.chosen,
        dataTransport: s.transport,
        appName: s.hello.appName,
        startedAt: Date.now(),
        closed: channel.closed,
        close(reason = "closed by the sidecar") {
          channel.close(reason);
          s.control.close(reason);
        },
      };
      void channel.closed.then((err) => {
        s.control.close("session over");
        log.info({ session: session.id, app: session.appName, reason: err?.message }, "app session ended");
      });
      log.info({ session: session.id, app: session.appName, transport: s.chosen }, `app session started over ${s.chosen}`);
      opts.onSession(session);
      channel.start();
    },
  });
}
