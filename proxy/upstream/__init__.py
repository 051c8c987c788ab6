"""Talking to upstreams: `forward.py` picks one and fails over, `http1.py` is the transport.

The request's whole path (intake, admission, relay, accounting) is `proxy/gateway/`.
"""
