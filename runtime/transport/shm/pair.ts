// Builds connected ShmTransports over a real uds control connection, outside session negotiation:
// for tests (the RPC suite runs over the pair) and for tools that own both ends.
import { join } from "node:path";
import type { Transport } from "../types.ts";
import { connectedUdsPair } from "../uds.ts";
import { ShmSegment } from "./segment.ts";
import type { SpinSetting } from "./spin.ts";
import { ShmTransport } from "./transport.ts";

export { DEFAULT_RING_BYTES } from "./provider.ts";
import { DEFAULT_RING_BYTES } from "./provider.ts";

/**
 * Makes `control` drive `shm`: its DOORBELL frames wake the shm reader and its close ends the shm
 * session. Takes over the control connection's sink (other frames on it are ignored).
 */
export function wireControl(shm: ShmTransport, control: Transport): void {
  control.start({
    onFrame: (kind) => shm.onControlFrame(kind),
    onClose: (error) => {
      if (!shm.closed) {
        shm.close(error ? `control connection lost: ${error.message}` : "control connection closed: the peer exited or was killed");
      }
    },
  });
}

export interface ShmPair {
  app: ShmTransport;
  sidecar: ShmTransport;
  /** Closes both ends and the listener. */
  close(): void;
}

/** Two ShmTransports in this process, joined by a Unix socket under `dir` (a private directory). */
export async function connectedShmPair(opts: { dir: string; ringBytes?: number; spin?: SpinSetting }): Promise<ShmPair> {
  const { dialled: appControl, accepted: sidecarControl, listener } = await connectedUdsPair(join(opts.dir, "shm-pair.sock"));
  try {
    const segment = ShmSegment.create(opts.ringBytes ?? DEFAULT_RING_BYTES);
    const appSegment = ShmSegment.open(segment.info);
    const sidecar = new ShmTransport({ segment, control: sidecarControl, spin: opts.spin });
    const app = new ShmTransport({ segment: appSegment, control: appControl, spin: opts.spin });
    wireControl(sidecar, sidecarControl);
    wireControl(app, appControl);
    return {
      app,
      sidecar,
      close() {
        app.close();
        sidecar.close();
        listener.stop();
      },
    };
  } catch (e) {
    listener.stop();
    throw e;
  }
}
