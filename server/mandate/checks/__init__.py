"""The check plane: decisions, lists, Explain, access review and the past (rpc: the gRPC handlers;
authzen and http: the same over AuthZEN; review; history)."""
