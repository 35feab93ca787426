// Checks, before anything is launched, that every fixed port in mesh.yaml can be bound. Finding out
// from a sidecar that crash-loops on EADDRINUSE is much worse than one clear line up front.
import { createServer } from "node:net";

/** Tries to bind host:port and releases it at once. Resolves null when free, else the errno code. */
export function probePort(host: string, port: number): Promise<string | null> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? String(e.message)));
    // exclusive: a port shared through the cluster module would look free while it is not.
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(null)));
  });
}

export function describeBindError(code: string): string {
  switch (code) {
    case "EADDRINUSE":
      return "is already in use — stop the program using it (ss -ltnp shows which) or pick another port";
    case "EACCES":
      return "cannot be bound: permission denied — use a port above 1023";
    case "EADDRNOTAVAIL":
      return "cannot be bound: the address is not on this machine — use 127.0.0.1 or 0.0.0.0";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "cannot be bound: the host name does not resolve — use an IP address";
    default:
      return `cannot be bound (${code}) — pick another host or port`;
  }
}
