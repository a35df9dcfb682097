"""Data in and out: import, export, erasing a person (rpc: the gRPC handlers; service; worldfile: the
world format)."""
