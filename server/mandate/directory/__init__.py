"""The directory: users, organizations, linked accounts, registered resources and roles on them (rpc:
the gRPC handlers; service)."""
