"""The gRPC adapter: camserve.v1 ExplainService over a model repository, with health and reflection."""
