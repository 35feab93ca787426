// Loads mesh.yaml and the pod's protos in a worker thread and hands back only the results (plain data).
// Why a worker: the loaders (zod, yaml, the protobufjs parser) are needed for a few milliseconds at
// start-up, but once imported their code stays in the process for its whole life — about 5 MB of the
// sidecar's resident memory. Loaded in a worker, they go away with it.
import { dirname } from "node:path";
import { findPod, loadConfig } from "../config/index.ts";
import { loadMethods } from "./protos.ts";

export interface LoadRequest {
  configPath: string;
  pod: string;
}

export type LoadReply = { ok: true; pod: import("../config/index.ts").PodConfig; methods: import("./protos.ts").MethodInfo[] } | { ok: false; message: string };

declare const self: Worker;

self.onmessage = (ev: MessageEvent<LoadRequest>) => {
  let reply: LoadReply;
  try {
    const { configPath, pod: name } = ev.data;
    const config = loadConfig(configPath);
    const pod = findPod(config, name, configPath);
    const methods = [...loadMethods(pod.sidecar.protos, dirname(configPath)).values()];
    reply = { ok: true, pod, methods };
  } catch (e) {
    reply = { ok: false, message: (e as Error).message };
  }
  self.postMessage(reply);
};
