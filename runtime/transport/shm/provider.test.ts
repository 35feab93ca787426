import { describe, expect, test } from "bun:test";
import { DEFAULT_RING_BYTES, parseRingBytes, shmProvider } from "./provider.ts";

describe("shm provider settings", () => {
  test("ring size: bytes or k/m/g, a power of two from 4 KiB to 1 GiB; errors name the source and the fix", () => {
    expect(parseRingBytes(undefined)).toBe(DEFAULT_RING_BYTES);
    // 256 KiB: small enough that the resident part of both rings stays small, see provider.ts.
    expect(DEFAULT_RING_BYTES).toBe(256 * 1024);
    expect(parseRingBytes("")).toBe(256 * 1024);
    expect(parseRingBytes("4096")).toBe(4096);
    expect(parseRingBytes("256k")).toBe(256 * 1024);
    expect(parseRingBytes("4M")).toBe(4 << 20);
    expect(parseRingBytes("1g")).toBe(1 << 30);
    for (const bad of ["3k", "2048", "2g", "1.5m", "lots", "-4096"]) {
      expect(() => parseRingBytes(bad, "mesh.yaml sidecar.shm.ring_bytes")).toThrow(
        /^mesh\.yaml sidecar\.shm\.ring_bytes=".*" is not a ring size: use a power of two from 4096 to 1073741824 bytes/,
      );
    }
  });

  test("the app offers no ring size unless it has its own setting, so the sidecar's mesh.yaml value decides", () => {
    const saved = process.env.MESH_SHM_RING_BYTES;
    try {
      delete process.env.MESH_SHM_RING_BYTES;
      expect(shmProvider.offer()).toEqual({ shmOffer: { ringBytes: 0 } });
      process.env.MESH_SHM_RING_BYTES = "64k";
      expect(shmProvider.offer()).toEqual({ shmOffer: { ringBytes: 65536 } });
    } finally {
      if (saved === undefined) delete process.env.MESH_SHM_RING_BYTES;
      else process.env.MESH_SHM_RING_BYTES = saved;
    }
  });

  test("works on this machine (Linux, glibc, /proc), and says so without side effects", () => {
    expect(shmProvider.unavailableReason()).toBeUndefined();
  });
});
