// How a data transport (shm, rpal) plugs into session negotiation. uds needs no provider: the
// control connection itself carries the frames.
import type { HelloMsg } from "../rpc/wire.ts";
import type { Transport, TransportName } from "./types.ts";
import type { UdsTransport } from "./uds.ts";

export interface SidecarSetup {
  /** Fields added to the sidecar's HELLO answer (e.g. shmSetup, rpal keys). */
  reply: Partial<HelloMsg>;
  /**
   * Called after the answer was sent; resolves with the data transport. `control` keeps carrying
   * doorbells and whatever the provider decides to send over it.
   */
  transport(): Promise<Transport>;
  /** Releases what setup created if the session never started. */
  abort(): void;
}

export interface TransportProvider {
  readonly name: Exclude<TransportName, "uds">;
  /** Why this transport cannot work in this process, or undefined if it can. No side effects. */
  unavailableReason(): string | undefined;
  /** App side: fields added to the app's HELLO offer. */
  offer(): Partial<HelloMsg>;
  /** Sidecar side: set up the transport for an app that offered it. Throws with a reason if it can't. */
  sidecarSetup(control: UdsTransport, appHello: HelloMsg): Promise<SidecarSetup>;
  /** App side: attach to what the sidecar set up. Throws with a reason if it can't. */
  appAttach(control: UdsTransport, sidecarHello: HelloMsg): Promise<Transport>;
}
