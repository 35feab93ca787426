// The error every piece of the gRPC layer throws for a request or response that breaks the protocol: it
// carries the gRPC status the peer gets (INTERNAL for broken framing, RESOURCE_EXHAUSTED for a message
// over the size limit, UNIMPLEMENTED for an unsupported compression, ...).
export class GrpcError extends Error {
  override name = "GrpcError";
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(details);
  }
}
