// The shared RPC suite over rpal against the librpal TEST DOUBLE, run by test/rpal-double-rpc.test.ts
// in a bun test process of its own. (Not named *.test.ts, so the main run does not pick it up.) It
// needs its own process because the app side runs in the test process and librpal, like RPAL itself,
// gives a process one service for life: the double pins its slot's address and the receiver thread
// binds one library, so sharing the runner with other files that load the double made both flaky.
import { defineRpcSuite } from "./rpc-suite.ts";
import { rpalTestDoubleTransport } from "./transports.ts";

defineRpcSuite(rpalTestDoubleTransport());
