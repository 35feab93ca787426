// How rpal plugs into session negotiation (runtime/transport/negotiate.ts). The app offers its service
// key and id in HELLO; the sidecar answers with its own and opens the data socket; both then request
// each other's service and park their receivers (session.ts).
import { maxFrameBody } from "../../rpc/frame.ts";
import { DEFAULT_SETTINGS } from "../../rpc/types.ts";
import type { HelloMsg } from "../../rpc/wire.ts";
import type { SidecarSetup, TransportProvider } from "../provider.ts";
import type { Transport } from "../types.ts";
import { logger } from "../../log.ts";
import { processRpalDetection } from "./detect.ts";
import { openRpalSession, rpalLocal } from "./session.ts";

const log = logger("rpal");

function librpalPath(): string {
  const d = processRpalDetection();
  if (!d.available || !d.librpalPath) throw new Error(d.reason ?? "rpal is not available");
  return d.librpalPath;
}

function peerOf(hello: HelloMsg, who: string): { key: bigint; id: number } {
  const r = hello.rpal;
  if (!r || typeof r.serviceKey !== "bigint" || r.serviceKey <= 0n || !Number.isInteger(r.serviceId) || r.serviceId < 0 || r.serviceId > 254) {
    throw new Error(`the ${who} chose rpal but its HELLO carries no valid RPAL service key/id`);
  }
  return { key: r.serviceKey, id: r.serviceId };
}

export const rpalProvider: TransportProvider = {
  name: "rpal",
  unavailableReason: () => processRpalDetection().reason,

  offer(): Partial<HelloMsg> {
    try {
      const { proc } = rpalLocal(librpalPath());
      return { rpal: { serviceKey: proc.key, serviceId: proc.id } };
    } catch (e) {
      // Offering without keys makes the sidecar pass rpal over (auto) or refuse it naming this (forced).
      log.warn({ reason: (e as Error).message }, `rpal: cannot initialise librpal: ${(e as Error).message}`);
      return {};
    }
  },

  async sidecarSetup(_control, appHello: HelloMsg): Promise<SidecarSetup> {
    const peer = peerOf(appHello, "app");
    const { proc } = rpalLocal(librpalPath());
    const pending = openRpalSession({
      librpalPath: librpalPath(),
      role: "listen",
      peerKey: peer.key,
      peerId: peer.id,
      maxBodyBytes: maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes),
      peerMaxBodyBytes: maxFrameBody(appHello.maxMessageBytes || DEFAULT_SETTINGS.maxMessageBytes),
    });
    pending.ready.catch(() => {}); // reported through transport()
    return {
      reply: { rpal: { serviceKey: proc.key, serviceId: proc.id } },
      transport: (): Promise<Transport> => pending.ready,
      abort: () => pending.abort(),
    };
  },

  async appAttach(_control, sidecarHello: HelloMsg): Promise<Transport> {
    const peer = peerOf(sidecarHello, "sidecar");
    return await openRpalSession({
      librpalPath: librpalPath(),
      role: "connect",
      peerKey: peer.key,
      peerId: peer.id,
      maxBodyBytes: maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes),
      peerMaxBodyBytes: maxFrameBody(sidecarHello.maxMessageBytes || DEFAULT_SETTINGS.maxMessageBytes),
    }).ready;
  },
};
