"""The Training gRPC service (placeholder until the jobs work lands)."""


def register(grpc_server, settings):
    """Add the Training service to ``grpc_server``; returns the servicer (None: not available)."""
    return None
