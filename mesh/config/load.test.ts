import { describe, expect, test, afterAll } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError, loadConfig, parseConfig } from "./index.ts";

const dir = mkdtempSync(join(tmpdir(), "rpal-mesh-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = join(dir, "mesh.yaml");

const POD = `version: 1
pods:
  - name: greeter
    app:
      command: bun
`;

function errorOf(text: string): ConfigError {
  try {
    parseConfig(text, file);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

describe("loadConfig: valid files", () => {
  test("applies defaults and keeps YAML's snake_case keys", () => {
    const c = parseConfig(POD, file);
    const pod = c.pods[0]!;
    expect(pod.app).toEqual({ command: "bun", args: [], env: {}, cwd: dir });
    expect(pod.sidecar.transport).toBe("auto");
    expect(pod.sidecar.shm).toEqual({ ring_bytes: 262144, spin: "auto" });
    expect(pod.sidecar.admin).toEqual({ host: "127.0.0.1", port: 0 });
    expect(pod.sidecar.inbound).toBeUndefined();
    expect(pod.sidecar.max_message_bytes).toBe(4194304);
    expect(pod.sidecar.drain_seconds).toBe(5);
    expect(pod.sidecar.upstreams).toEqual([]);
  });

  test("resolves cwd, protos and tls paths against the file's directory", () => {
    const c = parseConfig(
      `${POD}      cwd: app
    sidecar:
      protos: [p/hello.proto, /abs/x.proto]
      tls: { ca: certs/ca.pem, cert: certs/g.pem, key: certs/g-key.pem }
`,
      file,
    );
    const pod = c.pods[0]!;
    expect(pod.app.cwd).toBe(join(dir, "app"));
    expect(pod.sidecar.protos).toEqual([join(dir, "p/hello.proto"), "/abs/x.proto"]);
    expect(pod.sidecar.tls).toEqual({ ca: join(dir, "certs/ca.pem"), cert: join(dir, "certs/g.pem"), key: join(dir, "certs/g-key.pem") });
  });

  test("fills upstream policy defaults and turns env numbers into strings", () => {
    const c = parseConfig(
      `${POD}      env: { PORT: 8080, DEBUG: true }
    sidecar:
      upstreams:
        - service: hello.Greeter
          dns: greeter.default.svc.cluster.local:50051
          retries: { max_attempts: 5 }
`,
      file,
    );
    expect(c.pods[0]!.app.env).toEqual({ PORT: "8080", DEBUG: "true" });
    const up = c.pods[0]!.sidecar.upstreams[0]!;
    expect(up.lb).toBe("round_robin");
    expect(up.retries).toEqual({
      max_attempts: 5,
      retry_on: ["UNAVAILABLE"],
      base_backoff_ms: 25,
      max_backoff_ms: 250,
      budget_percent: 20,
      min_retries_per_second: 10,
    });
    expect(up.circuit_breaker).toEqual({ max_concurrent: 1024, max_pending: 1024 });
    expect(up.outlier_detection.consecutive_failures).toBe(5);
  });

  test("examples/hello/mesh.yaml loads with the documented ports", () => {
    const c = loadConfig(join(import.meta.dir, "../../examples/hello/mesh.yaml"));
    expect(c.pods.map((p) => p.name)).toEqual(["greeter", "frontend"]);
    expect(c.pods[0]!.sidecar.inbound).toEqual({ host: "127.0.0.1", port: 50051 });
    expect(c.pods[0]!.sidecar.admin.port).toBe(9901);
    expect(c.pods[1]!.sidecar.admin.port).toBe(9902);
    expect(c.pods[1]!.sidecar.upstreams[0]!.endpoints).toEqual(["127.0.0.1:50051"]);
  });
});

describe("loadConfig: errors name file, line, field and fix", () => {
  test("wrong type", () => {
    const e = errorOf(`${POD}    sidecar:\n      inbound: { host: 127.0.0.1, port: "abc" }\n`);
    expect(e.message).toBe(
      `${file}:7: pods[0].sidecar.inbound.port: expected a number from 0 to 65535, got "abc" — set it to a free TCP port (0 = pick a free one)`,
    );
    expect(e.line).toBe(7);
    expect(e.field).toBe("pods[0].sidecar.inbound.port");
  });

  test("unknown field, with a suggestion", () => {
    const e = errorOf(`${POD}    sidecar:\n      shm:\n        ring_byts: 4096\n`);
    expect(e.message).toBe(`${file}:8: pods[0].sidecar.shm.ring_byts: unknown field — did you mean ring_bytes?`);
  });

  test("unknown field without a close match lists what is allowed", () => {
    const e = errorOf(`${POD}    sidecar:\n      zzzzzzzz: 1\n`);
    expect(e.message).toContain("pods[0].sidecar.zzzzzzzz: unknown field — remove it; allowed here: transport, shm, inbound");
  });

  test("missing command", () => {
    const e = errorOf(`version: 1\npods:\n  - name: greeter\n    app:\n      args: [x.ts]\n`);
    expect(e.message).toBe(`${file}:5: pods[0].app.command: missing — set command to the executable, e.g. command: bun`);
  });

  test("out of range, bad enum, bad pod name, bad endpoint", () => {
    expect(errorOf(`${POD}    sidecar:\n      inbound: { port: 70000 }\n`).message).toContain(
      "pods[0].sidecar.inbound.port: expected a number from 0 to 65535, got 70000",
    );
    expect(errorOf(`${POD}    sidecar:\n      transport: fast\n`).message).toContain(
      ':7: pods[0].sidecar.transport: expected one of auto, uds, shm, rpal, got "fast"',
    );
    expect(errorOf(`version: 1\npods:\n  - name: Bad_Name\n    app: { command: bun }\n`).message).toContain(':3: pods[0].name: expected lowercase');
    expect(
      errorOf(`${POD}    sidecar:\n      upstreams:\n        - service: hello.Greeter\n          endpoints: [nope]\n`).message,
    ).toContain(':9: pods[0].sidecar.upstreams[0].endpoints[0]: expected "host:port"');
    expect(errorOf(`${POD}    sidecar:\n      shm: { ring_bytes: 5000 }\n`).message).toContain("expected a power of two, got 5000");
  });

  test("upstream needs exactly one of endpoints and dns", () => {
    expect(errorOf(`${POD}    sidecar:\n      upstreams:\n        - service: hello.Greeter\n`).message).toBe(
      `${file}:8: pods[0].sidecar.upstreams[0]: expected endpoints or dns — add endpoints: [host:port] (static) or dns: name:port`,
    );
    expect(
      errorOf(`${POD}    sidecar:\n      upstreams:\n        - service: hello.Greeter\n          endpoints: [a:1]\n          dns: b:2\n`).message,
    ).toContain("expected endpoints or dns, not both");
  });

  test("duplicate pod names and ports", () => {
    expect(errorOf(`${POD}  - name: greeter\n    app: { command: bun }\n`).message).toBe(
      `${file}:6: pods[1].name: duplicate pod name "greeter" (also pods[0]) — give every pod its own name`,
    );
    const dupPort = `${POD}    sidecar:\n      inbound: { port: 9000 }\n  - name: other\n    app: { command: bun }\n    sidecar:\n      admin: { port: 9000 }\n`;
    expect(errorOf(dupPort).message).toBe(
      `${file}:11: pods[1].sidecar.admin.port: port 9000 is already used by pods[0].sidecar.inbound.port — pick another port`,
    );
  });

  test("YAML syntax errors, empty files and non-maps", () => {
    expect(errorOf("version: 1\npods: [\n").message).toMatch(/:3: YAML syntax error: .* — fix the YAML at that line$/);
    expect(errorOf("version: 1\nversion: 1\npods: []\n").message).toContain(":2: YAML syntax error: Map keys must be unique");
    expect(errorOf("").message).toContain(":1: the file is empty");
    expect(errorOf("- a\n").message).toContain("(top level): expected a map with version: 1 and pods:, got a list");
    expect(errorOf("version: 2\npods: []\n").message).toContain(":1: version: expected 1, got 2 — write version: 1");
  });

  test("hostile input: alias bombs and huge files are refused, never expanded", () => {
    const bomb = ["a: &a [x,x,x,x,x,x,x,x,x,x]"];
    for (let i = 0; i < 12; i++) bomb.push(`${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(10).fill(`*${String.fromCharCode(97 + i)}`).join(",")}]`);
    expect(() => parseConfig(bomb.join("\n"), file)).toThrow(/cannot expand the YAML/);
    const big = join(dir, "big.yaml");
    writeFileSync(big, "#".repeat(2 * 1024 * 1024));
    expect(() => loadConfig(big)).toThrow(/too big for a mesh.yaml/);
  });

  test("unreadable paths", () => {
    expect(() => loadConfig(join(dir, "missing.yaml"))).toThrow(/cannot read mesh.yaml: no such file — check the path/);
    mkdirSync(join(dir, "d.yaml"));
    expect(() => loadConfig(join(dir, "d.yaml"))).toThrow(/not a regular file/);
  });
});
