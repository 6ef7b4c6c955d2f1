"""Generated modules of the camserve gRPC contract (proto/camserve/v1); regenerate: scripts/generate_proto.sh."""
