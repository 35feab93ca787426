// `mesh k8s [mesh.yaml] [--out DIR] [--image IMAGE] [--namespace NS] [--replicas N] [--context DIR]`:
// renders one Kubernetes manifest file per pod. User mistakes are one line on stderr and exit code 2;
// nothing is written unless every pod rendered and validated.
import { mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config/index.ts";
import { K8sRenderError } from "./names.ts";
import { renderAll, type RenderedPod } from "./render.ts";

export const DEFAULT_IMAGE = "rpal-mesh:dev";
const DEFAULT_CONFIG = join(import.meta.dir, "../../examples/hello/mesh.yaml");

const USAGE = `usage: mesh k8s [mesh.yaml] [--out DIR] [--image IMAGE] [--namespace NS] [--replicas N] [--context DIR]

Renders, for every pod in mesh.yaml, DIR/<pod>.yaml: a Deployment (app + native sidecar), its
ConfigMap, a Service and a headless Service. Apply with: kubectl apply -f DIR/

  mesh.yaml        default: examples/hello/mesh.yaml
  --out DIR        where to write (default: ./k8s)
  --image IMAGE    image holding the project and bun, built from mesh/k8s/Dockerfile (default: ${DEFAULT_IMAGE})
  --namespace NS   namespace of the objects and of the service DNS names (default: default)
  --replicas N     replicas per Deployment (default: 1)
  --context DIR    the directory the image was built from (default: the current directory)`;

class UsageError extends Error {}

// DNS-1123 label (namespaces) and a conservative image reference check: no whitespace, no control bytes.
const NAMESPACE_RE = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const IMAGE_RE = /^[A-Za-z0-9][A-Za-z0-9._\-/:@]{0,254}$/;

interface Parsed {
  file: string;
  out: string;
  image: string;
  namespace: string;
  replicas: number;
  context: string;
}

function parse(argv: string[]): Parsed | "help" {
  let values, positionals;
  try {
    ({ values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        out: { type: "string", short: "o" },
        image: { type: "string" },
        namespace: { type: "string", short: "n" },
        replicas: { type: "string" },
        context: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (e) {
    throw new UsageError(`${(e as Error).message} — run mesh k8s --help`);
  }
  if (values.help) return "help";
  if (positionals.length > 1) throw new UsageError(`expected at most one mesh.yaml, got ${positionals.length}: ${positionals.join(" ")}`);
  const image = values.image ?? DEFAULT_IMAGE;
  if (!IMAGE_RE.test(image)) throw new UsageError(`--image "${image}" is not an image reference — write e.g. registry.example.com/team/rpal-mesh:1.0`);
  const namespace = values.namespace ?? "default";
  if (!NAMESPACE_RE.test(namespace)) throw new UsageError(`--namespace "${namespace}" is not a Kubernetes namespace name — lowercase letters, digits and -, at most 63`);
  const replicasText = values.replicas ?? "1";
  if (!/^\d{1,4}$/.test(replicasText) || Number(replicasText) < 1 || Number(replicasText) > 1000) {
    throw new UsageError(`--replicas "${replicasText}" — expected a whole number from 1 to 1000`);
  }
  return {
    file: resolve(positionals[0] ?? DEFAULT_CONFIG),
    out: resolve(values.out ?? "k8s"),
    image,
    namespace,
    replicas: Number(replicasText),
    context: resolve(values.context ?? "."),
  };
}

/** Writes each file via a temporary name so a reader never sees half a manifest. */
function writeAll(out: string, pods: RenderedPod[]): void {
  try {
    mkdirSync(out, { recursive: true });
  } catch (e) {
    throw new UsageError(`cannot create --out ${out}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} — pick a writable directory`);
  }
  for (const p of pods) {
    const target = join(out, p.file);
    const tmp = `${target}.${process.pid}.tmp`;
    try {
      writeFileSync(tmp, p.text, { mode: 0o644 });
      renameSync(tmp, target);
    } catch (e) {
      rmSync(tmp, { force: true });
      throw new UsageError(`cannot write ${target}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} — pick a writable --out directory`);
    }
  }
}

export interface K8sIo {
  out: (line: string) => void;
  err: (line: string) => void;
}

export async function k8sMain(argv: string[], io: K8sIo = { out: (l) => console.log(l), err: (l) => console.error(l) }): Promise<number> {
  try {
    const args = parse(argv);
    if (args === "help") {
      io.out(USAGE);
      return 0;
    }
    const config = loadConfig(args.file);
    const pods = renderAll(config, {
      image: args.image,
      namespace: args.namespace,
      replicas: args.replicas,
      context: args.context,
      configFile: args.file,
    });
    writeAll(args.out, pods);
    for (const p of pods) {
      io.out(`wrote ${join(args.out, p.file)}  (${p.objects.map((o) => `${o.kind}/${o.metadata?.name}`).join(", ")})`);
      for (const n of p.upstreamNotes) io.out(`  upstream ${n}`);
    }
    io.out(`apply with: kubectl apply -f ${args.out}/`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError || e instanceof ConfigError || e instanceof K8sRenderError) {
      io.err(`mesh k8s: ${e.message}`);
      return 2;
    }
    io.err(`mesh k8s: internal error: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

if (import.meta.main) process.exit(await k8sMain(process.argv.slice(2)));
