"""Membership: invitations and members of an organization (rpc: the gRPC handlers; service)."""
