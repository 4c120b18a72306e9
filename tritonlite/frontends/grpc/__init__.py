"""inference.GRPCInferenceService on grpc.aio: thin RPC adapters over the core."""
