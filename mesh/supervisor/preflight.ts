// Checks everything `mesh up` can check before launching a single process, so a mistake in mesh.yaml
// is one clear line (file, line, field, fix) and exit code 2 instead of a crash loop.
import { accessSync, constants, existsSync, statSync } from "node:fs";
import { isAbsolute, resolve } from "node:path";
import { fieldLocation, type MeshConfig } from "../config/index.ts";
import { UserError } from "./errors.ts";
import { describeBindError, probePort } from "./ports.ts";

/** The program to exec for `command` run in `cwd`, or null when there is none. */
export function resolveCommand(command: string, cwd: string, path: string | undefined): string | null {
  if (command.includes("/")) {
    const abs = isAbsolute(command) ? command : resolve(cwd, command);
    try {
      accessSync(abs, constants.X_OK);
      return statSync(abs).isFile() ? abs : null;
    } catch {
      return null;
    }
  }
  return Bun.which(command, { PATH: path ?? "", cwd });
}

export async function preflight(config: MeshConfig, file: string): Promise<void> {
  const at = (path: (string | number)[]) => fieldLocation(file, path);
  for (const [i, pod] of config.pods.entries()) {
    const { app, sidecar } = pod;
    if (!existsSync(app.cwd) || !statSync(app.cwd).isDirectory()) {
      throw new UserError(`${at(["pods", i, "app", "cwd"])}: directory ${app.cwd} does not exist — create it or fix cwd (relative to mesh.yaml)`);
    }
    const path = app.env.PATH ?? process.env.PATH;
    if (!resolveCommand(app.command, app.cwd, path)) {
      const where = app.command.includes("/") ? `${resolve(app.cwd, app.command)} is not an executable file` : `"${app.command}" is not found in PATH`;
      throw new UserError(`${at(["pods", i, "app", "command"])}: ${where} — install it or give its full path`);
    }
    for (const [j, proto] of sidecar.protos.entries()) {
      if (!existsSync(proto)) {
        throw new UserError(`${at(["pods", i, "sidecar", "protos", j])}: ${proto} does not exist — fix the path (relative to mesh.yaml)`);
      }
    }
    if (sidecar.tls) {
      for (const k of ["ca", "cert", "key"] as const) {
        if (!existsSync(sidecar.tls[k])) {
          throw new UserError(
            `${at(["pods", i, "sidecar", "tls", k])}: ${sidecar.tls[k]} does not exist — create certificates with \`bun run mesh certs\``,
          );
        }
      }
    }
  }
  // Ports last: they are the slowest check, and probed all at once.
  const probes: Promise<UserError | null>[] = [];
  for (const [i, pod] of config.pods.entries()) {
    for (const kind of ["inbound", "admin"] as const) {
      const listen = pod.sidecar[kind];
      if (!listen || listen.port === 0) continue;
      probes.push(
        probePort(listen.host, listen.port).then((code) =>
          code
            ? new UserError(`${at(["pods", i, "sidecar", kind, "port"])}: ${listen.host}:${listen.port} ${describeBindError(code)}`)
            : null,
        ),
      );
    }
  }
  const problem = (await Promise.all(probes)).find((e) => e !== null);
  if (problem) throw problem;
}
