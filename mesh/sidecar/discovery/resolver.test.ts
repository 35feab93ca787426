// DnsDiscoveryResolver driving the sidecar's real UpstreamCluster: the endpoint set follows DNS, an
// ejected endpoint stays ejected across refreshes, and a name with no records leaves nothing to pick.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { parseConfig } from "../../config/index.ts";
import { Status } from "../../../runtime/rpc/status.ts";
import { SidecarMetrics } from "../metrics.ts";
import { UpstreamCluster } from "../upstream.ts";
import { waitFor } from "../../../test/helpers.ts";
import { DnsDiscoveryResolver } from "./resolver.ts";
import { TestDnsServer } from "./test-dns-server.ts";

const NAME = "greeter-headless.default.svc.cluster.local";

function upstreamConfig() {
  const config = parseConfig(
    `version: 1
pods:
  - name: frontend
    app: { command: bun }
    sidecar:
      upstreams:
        - service: hello.Greeter
          dns: ${NAME}:50051
          outlier_detection: { consecutive_failures: 2, base_ejection_ms: 600000, max_ejection_percent: 50 }
`,
    "/tmp/mesh.yaml",
  );
  return config.pods[0]!.sidecar.upstreams[0]!;
}

describe("DnsDiscoveryResolver in the sidecar's UpstreamCluster", () => {
  let dns: TestDnsServer;
  let cluster: UpstreamCluster | undefined;

  beforeEach(async () => {
    dns = new TestDnsServer();
    dns.ttl = 0;
    await dns.start();
  });
  afterEach(() => {
    cluster?.close();
    cluster = undefined;
    dns.close();
  });

  const start = () => {
    const metrics = new SidecarMetrics("frontend", () => [], () => {}, () => 0);
    cluster = new UpstreamCluster(upstreamConfig(), {
      metrics,
      tls: undefined,
      maxMessageBytes: 4 << 20,
      resolverFor: (u) => new DnsDiscoveryResolver(u.dns!, { servers: [dns.server], minRefreshMs: 50, retryMs: 50, queryTimeoutMs: 200 }),
    });
    cluster.start();
    return cluster;
  };
  const addresses = (c: UpstreamCluster) => c.endpoints.map((e) => e.address);

  test("endpoints follow the headless Service's A records; outlier ejection survives re-resolution", async () => {
    dns.a.set(NAME, ["127.0.0.2", "127.0.0.3"]);
    const c = start();
    await waitFor(() => c.endpoints.length === 2, { what: "two endpoints" });
    expect(addresses(c)).toEqual(["127.0.0.2:50051", "127.0.0.3:50051"]);

    const sick = c.endpoints[0]!;
    for (let i = 0; i < 2; i++) c.outlier.record(sick, Status.UNAVAILABLE, c.endpoints);
    expect(c.outlier.isEjected(sick)).toBe(true);

    dns.a.set(NAME, ["127.0.0.2", "127.0.0.3", "127.0.0.4"]); // a third replica becomes ready
    await waitFor(() => c.endpoints.length === 3, { what: "the third endpoint" });
    const same = c.endpoints.find((e) => e.address === "127.0.0.2:50051");
    expect(same).toBe(sick); // the same object: its ejection and counters were kept
    expect(c.outlier.isEjected(same!)).toBe(true);
    for (let i = 0; i < 30; i++) expect(c.pick()?.address).not.toBe("127.0.0.2:50051");
  });

  test("a name without records (no ready pods) empties the set, so calls fail fast, and it refills", async () => {
    dns.a.set(NAME, ["127.0.0.2"]);
    const c = start();
    await waitFor(() => c.endpoints.length === 1, { what: "one endpoint" });
    dns.a.delete(NAME);
    await waitFor(() => c.endpoints.length === 0, { what: "the endpoint to be withdrawn" });
    expect(c.pick()).toBeUndefined();
    dns.a.set(NAME, ["127.0.0.5"]);
    await waitFor(() => c.endpoints.length === 1, { what: "a new endpoint" });
    expect(addresses(c)).toEqual(["127.0.0.5:50051"]);
  });
});
