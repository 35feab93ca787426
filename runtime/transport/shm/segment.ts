// The shared-memory segment of one shm session: a sealed memfd created by the sidecar, mapped by both.
//
// Why memfd: it has no name in /dev/shm, so nothing can leak there even after kill -9 of both sides
// (the memory goes away with the last mapping). The app reaches it through /proc/<sidecar-pid>/fd/<n>,
// which the kernel lets only the same user (ptrace read access) open; the fd is closed as soon as the
// app has attached. The file is sealed against shrinking and growing, so nobody can truncate it under
// a mapping (which would SIGBUS the process on the next access).
//
// Layout (little-endian):
//   0    u32 magic "RPSM"      4  u32 version         8  u32 ringBytes      12 u32 segmentBytes
//   16   16-byte nonce (also sent in HELLO: proves both sides mapped the same segment)
//   32   u32 sidecar pid       36 u32 app pid         40 u32 attach token (app writes nonce-derived value)
//   64   i32 sidecar's last CPU (own cache line)      128 i32 app's last CPU (own cache line)
//   256  ring app→sidecar: control block, then data
//   ...  ring sidecar→app: control block, then data
import {
  addSeals,
  arrayBufferAt,
  closeFd,
  detachMapping,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  fchmod,
  fileSize,
  ftruncate,
  getpid,
  getSeals,
  memfdCreate,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  mmapShared,
  munmap,
  O_RDWR,
  openFile,
} from "../../native/libc.ts";
import { RING_CONTROL_BYTES, validRingBytes, MIN_RING_BYTES, MAX_RING_BYTES } from "./ring.ts";

export const SEGMENT_MAGIC = 0x4d535052; // "RPSM" little-endian
export const SEGMENT_VERSION = 1;
const HEADER_BYTES = 256;
const NONCE_BYTES = 16;
const OFF_MAGIC = 0;
const OFF_VERSION = 4;
const OFF_RING = 8;
const OFF_SIZE = 12;
const OFF_NONCE = 16;
const OFF_SIDECAR_PID = 32;
const OFF_APP_PID = 36;
const OFF_ATTACH = 40;
const CPU_SLOT = { sidecar: 64 / 4, app: 128 / 4 } as const;
const PAGE = 4096;

export type ShmRole = "app" | "sidecar";

/** What the sidecar tells the app in HELLO (ShmSetup). */
export interface SegmentInfo {
  path: string;
  ringBytes: number;
  segmentBytes: number;
  nonce: Uint8Array;
}

export function segmentBytesFor(ringBytes: number): number {
  const raw = HEADER_BYTES + 2 * (RING_CONTROL_BYTES + ringBytes);
  return Math.ceil(raw / PAGE) * PAGE;
}

/** Where each direction's ring lives. Ring 0 carries app→sidecar, ring 1 sidecar→app. */
export function ringLayout(ringBytes: number, ring: 0 | 1): { control: number; data: number } {
  const control = HEADER_BYTES + ring * (RING_CONTROL_BYTES + ringBytes);
  return { control, data: control + RING_CONTROL_BYTES };
}

function attachToken(nonce: Uint8Array): number {
  // Anything derived from the nonce works: only a process that read this segment's nonce can write it.
  return ((nonce[0]! | (nonce[1]! << 8) | (nonce[2]! << 16) | (nonce[3]! << 24)) ^ 0x5a5aa5a5) >>> 0;
}

/** Munmaps a mapping only once nothing can reach its ArrayBuffer any more (see detachMapping). */
const unmapWhenCollected = new FinalizationRegistry<{ addr: number; bytes: number }>(({ addr, bytes }) => {
  try {
    munmap(addr, bytes);
  } catch {
    // nothing sensible to do in a finalizer; the range stays reserved
  }
});

export class ShmSegment {
  readonly buffer: ArrayBuffer;
  private readonly u8: Uint8Array;
  private readonly u32: Uint32Array;
  private readonly i32: Int32Array;
  private fd: number;
  private released = false;

  private constructor(
    readonly role: ShmRole,
    readonly info: SegmentInfo,
    private readonly addr: number,
    fd: number,
  ) {
    this.fd = fd;
    this.buffer = arrayBufferAt(addr, info.segmentBytes);
    unmapWhenCollected.register(this.buffer, { addr, bytes: info.segmentBytes });
    this.u8 = new Uint8Array(this.buffer, 0, HEADER_BYTES);
    this.u32 = new Uint32Array(this.buffer, 0, HEADER_BYTES / 4);
    this.i32 = new Int32Array(this.buffer, 0, HEADER_BYTES / 4);
  }

  /** Sidecar side: creates, sizes, seals and maps a fresh segment. */
  static create(ringBytes: number): ShmSegment {
    if (!validRingBytes(ringBytes)) {
      throw new Error(`shm ring size ${ringBytes} must be a power of two between ${MIN_RING_BYTES} and ${MAX_RING_BYTES} bytes`);
    }
    const segmentBytes = segmentBytesFor(ringBytes);
    const fd = memfdCreate("rpal-mesh-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    let addr = 0;
    try {
      fchmod(fd, 0o600);
      ftruncate(fd, segmentBytes);
      addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      addr = mmapShared(fd, segmentBytes);
    } catch (e) {
      closeFd(fd);
      throw e;
    }
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const info: SegmentInfo = { path: `/proc/${getpid()}/fd/${fd}`, ringBytes, segmentBytes, nonce };
    const seg = new ShmSegment("sidecar", info, addr, fd);
    seg.u32[OFF_RING / 4] = ringBytes;
    seg.u32[OFF_SIZE / 4] = segmentBytes;
    seg.u8.set(nonce, OFF_NONCE);
    seg.u32[OFF_SIDECAR_PID / 4] = getpid();
    seg.u32[OFF_VERSION / 4] = SEGMENT_VERSION;
    Atomics.store(seg.i32, OFF_MAGIC / 4, SEGMENT_MAGIC | 0);
    return seg;
  }

  /**
   * App side: opens and maps what the sidecar announced, and checks it is the segment announced (size,
   * seals, magic, version, nonce). Throws naming the mismatch.
   */
  static open(setup: SegmentInfo): ShmSegment {
    const { path, ringBytes, segmentBytes, nonce } = setup;
    if (!validRingBytes(ringBytes)) throw new Error(`sidecar announced an invalid ring size ${ringBytes}`);
    if (segmentBytes !== segmentBytesFor(ringBytes)) {
      throw new Error(`sidecar announced a ${segmentBytes}-byte segment for ${ringBytes}-byte rings (expected ${segmentBytesFor(ringBytes)})`);
    }
    if (nonce.length !== NONCE_BYTES) throw new Error(`sidecar announced a ${nonce.length}-byte nonce (expected ${NONCE_BYTES})`);
    if (!/^\/proc\/\d+\/fd\/\d+$/.test(path)) {
      throw new Error(`sidecar announced segment path ${JSON.stringify(path)}, expected /proc/<pid>/fd/<n>`);
    }
    const fd = openFile(path, O_RDWR);
    let addr = 0;
    try {
      const seals = getSeals(fd);
      if ((seals & (F_SEAL_SHRINK | F_SEAL_GROW)) !== (F_SEAL_SHRINK | F_SEAL_GROW)) {
        throw new Error(`${path} is not sealed against resizing (seals 0x${seals.toString(16)}): refusing a segment that could be truncated under us`);
      }
      const size = fileSize(fd);
      if (size !== segmentBytes) throw new Error(`${path} is ${size} bytes, the sidecar announced ${segmentBytes}`);
      addr = mmapShared(fd, segmentBytes);
    } finally {
      // The mapping keeps the memory; the fd is not needed any more.
      closeFd(fd);
    }
    const seg = new ShmSegment("app", { ...setup, nonce: nonce.slice() }, addr, -1);
    const problem = seg.headerProblem();
    if (problem) {
      seg.release();
      throw new Error(`${path} is not the announced segment: ${problem}`);
    }
    seg.u32[OFF_APP_PID / 4] = getpid();
    Atomics.store(seg.i32, OFF_ATTACH / 4, attachToken(nonce) | 0);
    return seg;
  }

  private headerProblem(): string | undefined {
    const magic = Atomics.load(this.u32, OFF_MAGIC / 4);
    if (magic !== SEGMENT_MAGIC) return `bad magic 0x${magic.toString(16)}`;
    const version = this.u32[OFF_VERSION / 4]!;
    if (version !== SEGMENT_VERSION) return `segment version ${version}, this runtime speaks ${SEGMENT_VERSION}`;
    if (this.u32[OFF_RING / 4] !== this.info.ringBytes) return `ring size ${this.u32[OFF_RING / 4]} in the header, ${this.info.ringBytes} announced`;
    if (this.u32[OFF_SIZE / 4] !== this.info.segmentBytes) return `segment size ${this.u32[OFF_SIZE / 4]} in the header`;
    for (let i = 0; i < NONCE_BYTES; i++) if (this.u8[OFF_NONCE + i] !== this.info.nonce[i]) return "nonce differs from the one in HELLO";
    return undefined;
  }

  /** Sidecar side: true once the app has mapped this very segment (it wrote the nonce-derived token). */
  appAttached(): boolean {
    return (Atomics.load(this.i32, OFF_ATTACH / 4) >>> 0) === attachToken(this.info.nonce);
  }

  /** The app's pid as the app wrote it (0 before it attached). Untrusted: for logs only. */
  get appPid(): number {
    return this.u32[OFF_APP_PID / 4]!;
  }

  /** Closes the sidecar's memfd: once the app has mapped it, nobody else can open the segment. */
  closeFd(): void {
    if (this.fd < 0) return;
    const fd = this.fd;
    this.fd = -1;
    closeFd(fd);
  }

  get fdOpen(): boolean {
    return this.fd >= 0;
  }

  /** The ring carrying `from`'s frames. */
  ringOffsets(from: ShmRole): { control: number; data: number } {
    return ringLayout(this.info.ringBytes, from === "app" ? 0 : 1);
  }

  publishCpu(cpu: number): void {
    Atomics.store(this.i32, CPU_SLOT[this.role], cpu);
  }

  peerCpu(): number {
    return Atomics.load(this.i32, CPU_SLOT[this.role === "app" ? "sidecar" : "app"]);
  }

  /**
   * Lets go of the shared memory now. Any view still held (a body a sink kept without copying) reads
   * zeros from then on instead of faulting; the address range is unmapped once it is collected.
   */
  release(): void {
    if (this.released) return;
    this.released = true;
    try {
      this.closeFd();
    } finally {
      detachMapping(this.addr, this.info.segmentBytes);
    }
  }

  get isReleased(): boolean {
    return this.released;
  }
}
