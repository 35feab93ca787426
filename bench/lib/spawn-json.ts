// Runs a measuring program and takes the last JSON object it prints on stdout. A program that
// fails, hangs past its deadline or prints no JSON is an error naming the command and its stderr.
export interface SpawnJsonOptions {
  env?: Record<string, string>;
  timeoutMs: number;
}

export async function spawnJson<T>(cmd: string[], opts: SpawnJsonOptions): Promise<T> {
  const proc = Bun.spawn(cmd, {
    env: { ...process.env, ...opts.env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), opts.timeoutMs);
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  clearTimeout(timer);
  const what = cmd.join(" ");
  if (proc.signalCode === "SIGKILL") throw new Error(`${what} did not finish within ${opts.timeoutMs} ms:\n${err.slice(-2000)}`);
  if (code !== 0) throw new Error(`${what} exited with ${code ?? proc.signalCode}:\n${err.slice(-2000)}`);
  const line = out.trim().split("\n").filter((l) => l.startsWith("{")).pop();
  if (!line) throw new Error(`${what} printed no JSON result:\n${out.slice(-1000)}\n${err.slice(-1000)}`);
  return JSON.parse(line) as T;
}
