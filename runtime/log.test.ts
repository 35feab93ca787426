// runtime/log.ts: JSON lines when stderr is not a terminal, pino-pretty when it is — formatted in the
// logging process itself, without the Worker a pino transport would start (and which the sidecar
// bundle leaves out).
import { describe, expect, test } from "bun:test";
import { join } from "node:path";

const LOG = join(import.meta.dir, "log.ts");
// Logs one line and then prints how many threads the process has: a transport's Worker would be one more.
const SCRIPT = `import { readdirSync } from "node:fs";
import { logger } from ${JSON.stringify(LOG)};
const before = readdirSync("/proc/self/task").length;
logger("t").info({ n: 1 }, "hello pretty");
await Bun.sleep(200);
console.log("threads " + before + " " + readdirSync("/proc/self/task").length);
`;

function run(terminal: boolean, env: Record<string, string | undefined> = {}): Promise<string> {
  let text = "";
  const decoder = new TextDecoder();
  const common = { env: { ...process.env, MESH_LOG_FORMAT: undefined, ...env } as unknown as Record<string, string> };
  const proc = terminal
    ? Bun.spawn([process.execPath, "-e", SCRIPT], { ...common, terminal: { cols: 200, rows: 50, data: (_t, d) => void (text += decoder.decode(d, { stream: true })) } })
    : Bun.spawn([process.execPath, "-e", SCRIPT], { ...common, stdout: "pipe", stderr: "pipe" });
  return (async () => {
    if (!terminal) text = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
    expect(await proc.exited).toBe(0);
    return text.replace(/\x1b\[[0-9;]*m/g, "").replace(/\r/g, "");
  })();
}

describe("logger", () => {
  test("writes pretty lines in-process when stderr is a terminal", async () => {
    const out = await run(true);
    expect(out).toMatch(/INFO \(\d+\): hello pretty\n\s+component: "t"\n\s+n: 1/);
    const [, before, after] = /threads (\d+) (\d+)/.exec(out)!;
    expect(Number(after)).toBe(Number(before));
  });

  test("writes JSON lines when stderr is not a terminal, or MESH_LOG_FORMAT=json", async () => {
    for (const out of [await run(false), await run(true, { MESH_LOG_FORMAT: "json" })]) {
      const line = out.split("\n").find((l) => l.includes("hello pretty"))!;
      expect(JSON.parse(line)).toMatchObject({ level: 30, component: "t", n: 1, msg: "hello pretty", pid: expect.any(Number) });
    }
  });
});
