// Preloaded by bun test (bunfig.toml): hooks here run once around the whole multi-file run.
//
// Several test files load the librpal TEST DOUBLE into the test runner's own process. librpal keeps
// one service per process and the double pins its slot's address for the process's life, so the
// runner initialises it at most once (no per-file rpal_exit) and releases it here, after the last
// file, together with any slot files SIGKILLed test peers left in /dev/shm.
import { afterAll } from "bun:test";
import { removeStaleTestDoubleFiles } from "../runtime/transport/rpal/double/build.ts";
import { exitRpalProcess } from "../runtime/transport/rpal/librpal.ts";

afterAll(() => {
  exitRpalProcess();
  removeStaleTestDoubleFiles();
});
