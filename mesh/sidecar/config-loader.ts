// Loads mesh.yaml's pod and the methods of its protos for the sidecar, in a short-lived child process:
//
//   bun mesh/sidecar/config-loader.ts <mesh.yaml> <pod>
//
// prints one JSON line (a LoadReply: the results as plain data, or the error's message) and exits 0.
// Why a child process: the loaders (yaml, zod, the protobufjs parser) are needed for a few milliseconds
// at start-up, but code a process has run stays resident for the process's life. Loaded here, none of
// it is ever mapped by the sidecar. A Worker, used before, kept ~3.7 MB more in the sidecar (a Worker
// thread and its VM touch code pages of their own, and its heap is not all given back).
import { dirname } from "node:path";
import { findPod, loadConfig, type PodConfig } from "../config/index.ts";
import { loadMethods, type MethodInfo } from "./protos.ts";

export type LoadReply = { ok: true; pod: PodConfig; methods: MethodInfo[] } | { ok: false; message: string };

export function loadPod(configPath: string, name: string): LoadReply {
  try {
    const config = loadConfig(configPath);
    const pod = findPod(config, name, configPath);
    return { ok: true, pod, methods: [...loadMethods(pod.sidecar.protos, dirname(configPath)).values()] };
  } catch (e) {
    return { ok: false, message: (e as Error).message };
  }
}

if (import.meta.main) {
  const [configPath, name, ...rest] = process.argv.slice(2);
  if (configPath === undefined || name === undefined || rest.length > 0) {
    process.stderr.write("usage: bun mesh/sidecar/config-loader.ts <mesh.yaml> <pod>\n");
    process.exit(2);
  }
  process.stdout.write(JSON.stringify(loadPod(configPath, name)) + "\n");
}
