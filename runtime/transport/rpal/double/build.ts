// Builds the librpal TEST DOUBLE (librpal-double.c) for tests. Nothing outside tests imports this:
// production detection refuses the library it produces.
import { join } from "node:path";
import { compileShared } from "../compile.ts";

export function buildLibrpalTestDouble(): string {
  return compileShared(join(import.meta.dir, "librpal-double.c"), ["-lpthread"]);
}
