// Parses an upstream's `dns:` value and the DNS server list. Both come from outside (mesh.yaml, the
// environment), so every rejection says what was wrong and what to write instead.
import { isIP } from "./ip.ts";

export type DnsTarget =
  /** A/AAAA records of `name`; every address serves `port`. */
  | { kind: "a"; name: string; port: number }
  /** SRV records of `name` (it starts with `_service._proto.`); each record names its own target and port. */
  | { kind: "srv"; name: string; fallbackPort: number }
  /** An IP literal: nothing to resolve. */
  | { kind: "ip"; host: string; port: number };

export class DnsConfigError extends Error {
  override name = "DnsConfigError";
}

// RFC 1035 names, plus the leading underscores of SRV labels; at most 253 characters.
const LABEL_RE = /^(?:_?[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?|_[A-Za-z0-9-]{1,62})$/;

function checkName(name: string, what: string): void {
  const bare = name.endsWith(".") ? name.slice(0, -1) : name;
  if (bare.length === 0 || bare.length > 253 || !bare.split(".").every((l) => LABEL_RE.test(l))) {
    throw new DnsConfigError(
      `${what}: "${name}" is not a DNS name — write e.g. greeter-headless.default.svc.cluster.local:50051`,
    );
  }
}

function splitHostPort(value: string, what: string, example: string): { host: string; port: number | undefined } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(value);
  if (v6) return { host: v6[1]!, port: v6[2] === undefined ? undefined : Number(v6[2]) };
  const colon = value.lastIndexOf(":");
  if (colon < 0) return { host: value, port: undefined };
  if (value.indexOf(":") !== colon) {
    throw new DnsConfigError(`${what}: "${value}" — put IPv6 addresses in brackets, e.g. ${example}`);
  }
  const portText = value.slice(colon + 1);
  if (!/^\d{1,5}$/.test(portText)) throw new DnsConfigError(`${what}: "${value}" has no numeric port — write e.g. ${example}`);
  return { host: value.slice(0, colon), port: Number(portText) };
}

/**
 * `name:port` → A/AAAA lookup of name; `_grpc._tcp.name:port` → SRV lookup (the records' ports win,
 * `port` is used only for SRV records that carry port 0); `10.0.0.1:50051` → that address, no lookup.
 */
export function parseDnsTarget(value: string, what = "dns"): DnsTarget {
  const example = "greeter-headless.default.svc.cluster.local:50051";
  const { host, port } = splitHostPort(value.trim(), what, example);
  if (port === undefined) throw new DnsConfigError(`${what}: "${value}" has no port — write it as name:port, e.g. ${example}`);
  if (port < 1 || port > 65535) throw new DnsConfigError(`${what}: port ${port} in "${value}" is out of range — use 1 to 65535`);
  if (isIP(host)) return { kind: "ip", host, port };
  checkName(host, what);
  const name = host.endsWith(".") ? host.slice(0, -1) : host;
  if (name.startsWith("_")) {
    if (!/^_[^.]+\._(tcp|udp)\./i.test(name)) {
      throw new DnsConfigError(
        `${what}: "${value}" starts with "_" but is not an SRV name — write _<port-name>._tcp.<service>.<namespace>.svc.cluster.local:<port>`,
      );
    }
    return { kind: "srv", name, fallbackPort: port };
  }
  return { kind: "a", name, port };
}

/**
 * DNS servers as node:dns setServers wants them. Accepts "10.0.0.10", "10.0.0.10:5353", "[fd00::a]:53",
 * comma or space separated (the MESH_DNS_SERVERS form).
 */
export function parseDnsServers(value: string | readonly string[], what = "MESH_DNS_SERVERS"): string[] {
  const items = (typeof value === "string" ? value.split(/[\s,]+/) : [...value]).map((s) => s.trim()).filter(Boolean);
  if (items.length === 0) throw new DnsConfigError(`${what}: no DNS server given — write e.g. 10.96.0.10 or 127.0.0.1:5353`);
  if (items.length > 8) throw new DnsConfigError(`${what}: ${items.length} servers is too many — list at most 8`);
  return items.map((item) => {
    const { host, port } = splitHostPort(item, what, "[fd00::a]:53");
    if (!isIP(host)) throw new DnsConfigError(`${what}: "${item}" is not an IP address — DNS servers are given by address, e.g. 10.96.0.10:53`);
    if (port !== undefined && (port < 1 || port > 65535)) throw new DnsConfigError(`${what}: port ${port} in "${item}" is out of range — use 1 to 65535`);
    if (port === undefined) return host;
    return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
  });
}
