"""The running service: wiring (app), the server and its supervisor, the gRPC plumbing the areas'
handlers share (interceptors, scope, retries, validate, convert, requests), callers, config, logs,
metrics, TLS and the ephemeral world (world)."""
