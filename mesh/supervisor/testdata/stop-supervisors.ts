// For tests: stop every `mesh up` a test started with SIGTERM (and wait), before TestResources'
// SIGKILL cleanup. The supervisor's children run in their own process group, so a SIGKILLed
// supervisor would leave them running; SIGTERM makes it drain them first.
import type { Subprocess } from "bun";

export async function stopSupervisors(procs: Subprocess[], timeoutMs = 15_000): Promise<void> {
  await Promise.all(
    procs.splice(0).map(async (p) => {
      if (p.exitCode !== null || p.signalCode !== null) return;
      p.kill("SIGTERM");
      await Promise.race([p.exited, Bun.sleep(timeoutMs)]);
    }),
  );
}
