// The shared RPC suite (test/rpc-suite.ts) over the transports a stock machine really has.
import { defineRpcSuite } from "./rpc-suite.ts";
import { suiteTransports } from "./transports.ts";

for (const t of suiteTransports()) defineRpcSuite(t);
