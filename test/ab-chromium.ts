// Renders an HTML file in headless Chromium (Debian's `chromium` package) and returns the DOM after
// scripts ran. Used by the mesh ab tests to prove report.html opens from disk and lays out its charts.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const CHROMIUM_APT = "apt-get install -y chromium";

export function findChromium(): string {
  for (const p of ["/usr/bin/chromium", "/usr/bin/chromium-browser"]) if (existsSync(p)) return p;
  throw new Error(`headless Chromium is needed to check report.html and is not installed: run \`${CHROMIUM_APT}\` (as .ci/run does)`);
}

export async function dumpDom(htmlPath: string, timeoutMs = 60_000): Promise<string> {
  const profile = mkdtempSync(join(tmpdir(), "ab-chromium-"));
  try {
    const proc = Bun.spawn(
      [
        findChromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        `--user-data-dir=${profile}`,
        "--dump-dom",
        `file://${htmlPath}`,
      ],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
    );
    const killer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
    const [dom, err] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    clearTimeout(killer);
    if (proc.exitCode !== 0 || !dom.includes("</html>")) {
      throw new Error(`chromium --dump-dom ${htmlPath} failed (exit ${proc.exitCode ?? proc.signalCode}):\n${err.slice(-2000)}`);
    }
    return dom;
  } finally {
    rmSync(profile, { recursive: true, force: true });
  }
}

/** {rendered, total} from the marks report.html's script sets once the browser laid the charts out. */
export function chartMarks(dom: string): { rendered: number; total: number } {
  const rendered = /data-charts-rendered="(\d+)"/.exec(dom);
  const total = /data-charts-total="(\d+)"/.exec(dom);
  return { rendered: rendered ? Number(rendered[1]) : -1, total: total ? Number(total[1]) : -1 };
}
