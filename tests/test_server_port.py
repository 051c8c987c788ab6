"""A busy port is one clear exception naming the port and the flag, not a traceback;
what the app had started is stopped again."""

from __future__ import annotations

import socket

import pytest

from proxy import server
from proxy.app import create_app
from proxy.appkeys import STORE
from proxy.errors import PortInUse

from .gateway_harness import GatewayHarness, upstream_entry


async def test_serving_on_a_busy_port_raises_port_in_use(tmp_path):
    harness = GatewayHarness.write(str(tmp_path / "config"), [upstream_entry("a", "http://127.0.0.1:9")])
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    app = create_app(harness.config_dir, watch=False)
    try:
        with pytest.raises(PortInUse) as caught:
            await server.serve_until_signal(app, "127.0.0.1", port)
    finally:
        busy.close()
    assert str(caught.value) == (f"Port {port} on 127.0.0.1 is already in use; stop the process using it "
                                 "or choose another with --port (or server.port).")
    assert (caught.value.host, caught.value.port) == ("127.0.0.1", port)
    assert "\n" not in str(caught.value)
    assert app[STORE]._write_conn is None  # the database opened at start-up was closed again
