// Bundled and run by bundle.test.ts: uses what bundle.ts's lean built-ins stand in for (util.inherits
// in sonic-boom, assert when a destination closes, util.format in prom-client's errors, pino's
// transport) and prints what it saw as one JSON line. Logs one line through runtime/log.ts.
//   bun <bundle> <file for a pino destination>
import { EventEmitter } from "node:events";
import pino from "pino";
import { Counter, Registry } from "prom-client";
import { logger } from "../../../runtime/log.ts";

const out: Record<string, unknown> = {};
logger("lean").info({ n: 1 }, "hello");
const dest = pino.destination({ dest: process.argv[2]!, sync: true });
out.emitter = dest instanceof EventEmitter && (dest.constructor as unknown as { super_: unknown }).super_ === EventEmitter;
dest.write("line\n");
dest.end();
try {
  new Counter({ name: "c", help: "h", registers: [new Registry()] }).inc("x" as unknown as number);
} catch (e) {
  out.promError = (e as Error).message;
}
try {
  pino({ transport: { target: "pino-pretty" } });
} catch (e) {
  out.transportError = (e as Error).message;
}
console.log(JSON.stringify(out));
