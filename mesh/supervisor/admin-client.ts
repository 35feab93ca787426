// Asks a sidecar's admin port which transport its app session uses (GET /status). The answer is
// untrusted input: a wrong, slow or huge reply yields "unknown", never an exception.
export interface SidecarStatus {
  ready: boolean;
  transport: string | null;
}

const MAX_STATUS_BYTES = 64 * 1024;

export async function fetchSidecarStatus(admin: string, timeoutMs = 1000): Promise<SidecarStatus | null> {
  try {
    const res = await fetch(`http://${admin}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return null;
    const text = await readCapped(res, MAX_STATUS_BYTES);
    if (text === null) return null;
    const body = JSON.parse(text) as { ready?: unknown; transport?: unknown; sessions?: unknown };
    let transport = typeof body.transport === "string" && body.transport.length <= 16 ? body.transport : null;
    // Older sidecars only list sessions; take the first session's transport then.
    if (transport === null && Array.isArray(body.sessions)) {
      const t = (body.sessions[0] as { transport?: unknown } | undefined)?.transport;
      if (typeof t === "string" && t.length <= 16) transport = t;
    }
    return { ready: body.ready === true, transport };
  } catch {
    return null;
  }
}

/** The body as text, or null once it grows past `max` bytes (read no further than that). */
async function readCapped(res: Response, max: number): Promise<string | null> {
  if (!res.body) return "";
  const chunks: Uint8Array[] = [];
  let total = 0;
  for await (const chunk of res.body) {
    total += chunk.byteLength;
    if (total > max) {
      void res.body.cancel().catch(() => undefined);
      return null;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}
