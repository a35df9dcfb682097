"""The gRPC layer: handlers validate and convert, domain services decide."""
