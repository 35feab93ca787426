// A peer process for the rpal tests against the librpal TEST DOUBLE. Prints its service key and id as
// one JSON line, reads the other side's from stdin, opens the rpal session and echoes every frame back
// (MESSAGE frames with the same call id/flags/aux/body). Exits 0 when the session ends cleanly.
//   bun test/rpal-double-peer.fixture.ts <listen|connect> <librpal-double.so>
import { openRpalSession, rpalLocal } from "../runtime/transport/rpal/session.ts";

const [role, lib] = process.argv.slice(2) as ["listen" | "connect", string];
const { proc } = rpalLocal(lib);
console.log(JSON.stringify({ key: proc.key.toString(), id: proc.id, pid: process.pid }));

const reader = Bun.stdin.stream().getReader();
let buf = "";
while (!buf.includes("\n")) {
  const { value, done } = await reader.read();
  if (done) process.exit(3);
  buf += new TextDecoder().decode(value);
}
reader.releaseLock();
const peer = JSON.parse(buf.slice(0, buf.indexOf("\n"))) as { key: string; id: number };
const pending = openRpalSession({ librpalPath: lib, role, peerKey: BigInt(peer.key), peerId: peer.id });
const t = await pending.ready;
console.log("READY");
t.start({
  onFrame(kind, flags, callId, aux, body) {
    t.send(kind, flags, callId, aux, body);
  },
  onClose(error) {
    console.log(`CLOSED ${error ? error.message : "clean"}`);
    process.exit(0);
  },
});
