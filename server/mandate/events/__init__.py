"""The change log, listed or watched (rpc: the gRPC handlers; service)."""
