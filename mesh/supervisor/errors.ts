// Errors the CLI turns into one short line and an exit code, never a stack trace.

/** The user can fix it (config, flags, ports, paths): exit code 2. */
export class UserError extends Error {
  override name = "UserError";
  readonly exitCode = 2;
}

/** Something the user started failed to come up (a sidecar that dies before it is ready): exit code 1. */
export class StartupError extends Error {
  override name = "StartupError";
  readonly exitCode = 1;
}
