import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, statSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { TestResources, waitFor } from "../../test/helpers.ts";
import { FrameKind } from "../rpc/frame.ts";
import { connectUnix, listenUnix, prepareSocketPath, type UdsTransport } from "./uds.ts";

const res = new TestResources();
afterEach(() => res.cleanup());

describe("uds transport", () => {
  test("socket is owner-only (0600 in a 0700 directory), frames flow both ways, peer close is seen at once", async () => {
    const dir = join(res.scratchDir(), "run");
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const path = join(dir, "s.sock");
    const accepted: UdsTransport[] = [];
    const got: string[] = [];
    const listener = await listenUnix(path, (t) => {
      accepted.push(t);
      t.start({ onFrame: (_k, _f, id, _a, body) => {
        got.push(`${id}:${new TextDecoder().decode(body)}`);
        t.send(FrameKind.MESSAGE, 0, id, 0, body);
      }, onClose() {} });
    });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(path).mode & 0o777).toBe(0o600);
    const client = await connectUnix(path);
    const echoed: string[] = [];
    let closed = false;
    client.start({ onFrame: (_k, _f, id, _a, body) => echoed.push(`${id}:${new TextDecoder().decode(body)}`), onClose: () => (closed = true) });
    for (let i = 1; i <= 100; i++) client.send(FrameKind.MESSAGE, 0, i, 0, new TextEncoder().encode(`m${i}`));
    await waitFor(() => echoed.length === 100, { what: "100 echoes" });
    expect(echoed[99]).toBe("100:m100");
    accepted[0]!.close("test closes the server side");
    await waitFor(() => closed, { what: "the client to see the close", timeoutMs: 1000 });
    listener.stop();
  });

  test("a stale socket file from a dead process is replaced; a live one is refused; a non-socket is refused", async () => {
    const dir = res.scratchDir();
    const path = join(dir, "stale.sock");
    // A listener that goes away without unlinking leaves a stale file behind (as kill -9 would).
    const l1 = Bun.listen({ unix: path, socket: { data() {} } });
    l1.stop(true);
    const live = await listenUnix(path, () => {});
    await expect(prepareSocketPath(path)).rejects.toThrow(/in use by a live process/);
    live.stop();
    const file = join(dir, "plain");
    writeFileSync(file, "x");
    await expect(prepareSocketPath(file)).rejects.toThrow(/not a socket/);
  });

  test("connecting to a missing socket names the path and the fix", async () => {
    await expect(connectUnix(join(res.scratchDir(), "nope.sock"))).rejects.toThrow(/nope\.sock.*MESH_SOCKET/);
  });
});
