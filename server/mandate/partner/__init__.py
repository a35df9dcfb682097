"""The partner program: clients, invitation links, scopes, disconnects and partner employees (rpc: the
gRPC handlers; service)."""
