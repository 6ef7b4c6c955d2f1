"""Generated Python modules of the camserve gRPC contract (proto/camserve/); regenerate with scripts/generate_proto.sh."""
