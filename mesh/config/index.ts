// mesh.yaml: the schema (types every part of the mesh imports) and the loader.
export * from "./schema.ts";
export { ConfigError, fieldLocation, findPod, formatPath, loadConfig, parseConfig } from "./load.ts";
