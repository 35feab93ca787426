// The SDK's public surface.
export { connect, MeshConnection, type ConnectOptions, type CallContext, type ServiceImpl, type ServiceClient, type ResponseStream } from "./app.ts";
export { acceptApps, type AppSession, type AcceptAppsOptions } from "./sidecar.ts";
export { RpcError, Status, statusName, type Metadata } from "../rpc/status.ts";
export type { CallOptions, ServerCall, ClientCall } from "../rpc/types.ts";
