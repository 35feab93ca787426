// How shm plugs into session negotiation. The app offers a ring size; the sidecar creates a sealed
// memfd segment and answers with its /proc path, sizes and nonce; the app maps and verifies it, then
// both run ShmTransport with the uds control connection carrying doorbells.
//
// Settings (environment, each process its own):
//   MESH_SHM_SPIN        off | auto | <µs>   spin before parking (default auto; see spin.ts)
//   MESH_SHM_RING_BYTES  ring size per direction, a power of two, 4k..1g (default 256k)
// (mesh.yaml's sidecar.shm.spin / ring_bytes accept the same ranges.)
import { existsSync } from "node:fs";
import { maxFrameBody } from "../../rpc/frame.ts";
import { DEFAULT_SETTINGS } from "../../rpc/types.ts";
import type { HelloMsg } from "../../rpc/wire.ts";
import { libcUnavailableReason } from "../../native/libc.ts";
import type { SidecarSetup, TransportProvider } from "../provider.ts";
import type { Transport } from "../types.ts";
import type { UdsTransport } from "../uds.ts";
import { MAX_RING_BYTES, MIN_RING_BYTES, validRingBytes } from "./ring.ts";
import { ShmSegment } from "./segment.ts";
import { parseSpinSetting, spinFromWire, spinToWire, type SpinSetting } from "./spin.ts";
import { ShmTransport } from "./transport.ts";

// 256 KiB per direction. The rings are one memfd mapped in both processes, and every page the write
// cursor has passed stays resident in both (RssShmem): with 1 MiB rings a sidecar at 1,000 calls/s of
// 1 KB had ~1.1 MB of them resident. Messages of any size are chunked through the ring, and 256 KiB
// measured the same as 1 MiB in bench/run.ts's pipelined rows (64 calls in flight) and for 64 KiB to
// 3 MiB messages through a sidecar; a larger ring is for bursts of large messages (sidecar.shm.ring_bytes).
export const DEFAULT_RING_BYTES = 256 << 10;
/** The most a sidecar grants per direction unless its own setting is larger, whatever an app asks for. */
export const MAX_GRANTED_RING_BYTES = 16 << 20;

/** Parses a ring size ("65536", "64k", "1m"); throws naming the source and the accepted range. */
export function parseRingBytes(value: string | undefined, source = "MESH_SHM_RING_BYTES"): number {
  if (value === undefined || value === "") return DEFAULT_RING_BYTES;
  const m = /^(\d+)([kKmMgG]?)$/.exec(value.trim());
  const unit = { "": 1, k: 1024, m: 1 << 20, g: 1 << 30 }[(m?.[2] ?? "").toLowerCase()] ?? NaN;
  const n = m ? Number(m[1]) * unit : NaN;
  if (!validRingBytes(n)) {
    throw new Error(
      `${source}=${JSON.stringify(value)} is not a ring size: use a power of two from ${MIN_RING_BYTES} to ${MAX_RING_BYTES} bytes (e.g. 256k, 1m)`,
    );
  }
  return n;
}

function envSpin(): SpinSetting | undefined {
  const v = process.env.MESH_SHM_SPIN;
  return v === undefined || v === "" ? undefined : parseSpinSetting(v);
}

function settingsProblem(): string | undefined {
  try {
    envSpin();
    parseRingBytes(process.env.MESH_SHM_RING_BYTES);
    return undefined;
  } catch (e) {
    return (e as Error).message;
  }
}

export const shmProvider: TransportProvider = {
  name: "shm",

  unavailableReason(): string | undefined {
    if (process.platform !== "linux") return `shared memory rings need Linux (memfd, /proc); this is ${process.platform}`;
    const libc = libcUnavailableReason();
    if (libc) return libc;
    if (!existsSync("/proc/self/fd")) return "/proc is not mounted: the app could not open the sidecar's segment through /proc/<pid>/fd";
    return settingsProblem();
  },

  offer(): Partial<HelloMsg> {
    // 0 = no preference: the sidecar's own setting (mesh.yaml sidecar.shm.ring_bytes) decides.
    const own = process.env.MESH_SHM_RING_BYTES;
    return { shmOffer: { ringBytes: own ? parseRingBytes(own) : 0 } };
  },

  async sidecarSetup(control: UdsTransport, appHello: HelloMsg): Promise<SidecarSetup> {
    const own = parseRingBytes(process.env.MESH_SHM_RING_BYTES);
    const asked = appHello.shmOffer?.ringBytes ?? 0;
    // An app may ask for a different size, but not make the sidecar commit more than it would itself.
    const ringBytes = validRingBytes(asked) && asked <= Math.max(own, MAX_GRANTED_RING_BYTES) ? asked : own;
    const spin = envSpin() ?? "auto";
    const segment = ShmSegment.create(ringBytes);
    const { path, segmentBytes, nonce } = segment.info;
    return {
      reply: { shmSetup: { segmentPath: path, ringBytes, segmentBytes, spinUs: spinToWire(spin), nonce } },
      transport: async (): Promise<Transport> =>
        new ShmTransport({
          segment,
          control,
          spin,
          maxBodyBytes: maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes),
          peerMaxBodyBytes: maxFrameBody(appHello.maxMessageBytes || DEFAULT_SETTINGS.maxMessageBytes),
        }),
      abort: () => segment.release(),
    };
  },

  async appAttach(control: UdsTransport, sidecarHello: HelloMsg): Promise<Transport> {
    const setup = sidecarHello.shmSetup;
    if (!setup) throw new Error("the sidecar chose shm but sent no shm setup in its HELLO");
    let segment: ShmSegment;
    try {
      segment = ShmSegment.open({
        path: setup.segmentPath,
        ringBytes: setup.ringBytes,
        segmentBytes: setup.segmentBytes,
        nonce: setup.nonce,
      });
    } catch (e) {
      throw new Error(
        `cannot map the sidecar's shm segment: ${(e as Error).message} (app and sidecar must run as the same user in the same PID namespace)`,
      );
    }
    return new ShmTransport({
      segment,
      control,
      spin: envSpin() ?? spinFromWire(setup.spinUs),
      maxBodyBytes: maxFrameBody(DEFAULT_SETTINGS.maxMessageBytes),
      peerMaxBodyBytes: maxFrameBody(sidecarHello.maxMessageBytes || DEFAULT_SETTINGS.maxMessageBytes),
    });
  },
};
