"""Forwarding to upstreams: request bodies, attempts with failover, SSE relay."""
