// Is anybody listening there? A connection is opened and closed at once: used to tell a live
// listener from a stale socket file (uds.ts) and to see that a child process accepts connections.
export type ProbeTarget = { unix: string } | { hostname: string; port: number };

/** Resolves true when a connection to `to` opens, false when it is refused or fails. Never rejects. */
export function canConnect(to: ProbeTarget): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = {
      open(s: { end(): void }) {
        s.end();
        resolve(true);
      },
      data() {},
      connectError() {
        resolve(false);
      },
      error() {
        resolve(false);
      },
    };
    ("unix" in to ? Bun.connect({ unix: to.unix, socket }) : Bun.connect({ hostname: to.hostname, port: to.port, socket })).catch(() => resolve(false));
  });
}
