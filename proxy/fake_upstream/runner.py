"""Running the fake upstream: in-process for tests, or as a process for the CLI."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from .app import create_fake_app
from .faults import parse_fault
from .state import STATE_KEY, _State

# How long stop() lets in-flight handlers finish before cancelling them; a
# stopped upstream should look dead at once, not drain for aiohttp's 60 s.
_SHUTDOWN_TIMEOUT = 0.05


class FakeUpstream:
    """An in-process fake upstream that tests can stop and revive.

    The first start() picks the port (0: a free one); later starts reuse it,
    and the counters and fault plan survive a restart.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, **opts: Any) -> None:
        self.host = host
        self.port = port
        self.app = create_fake_app(**opts)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> _State:
        return self.app[STATE_KEY]

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> FakeUpstream:
        if self._runner is not None:
            return self
        runner = web.AppRunner(
            self.app,
            handler_cancellation=True,  # a client leaving cancels its handler
            access_log=None,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self.port = runner.addresses[0][1]
        self._runner = runner
        return self

    async def stop(self) -> None:
        """Close the socket and every connection, as if the process died."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def set_fault(self, plan: dict[str, Any]) -> None:
        self.state.fault = parse_fault(plan)

    def clear_faults(self) -> None:
        self.state.fault = None

    def reset_stats(self) -> None:
        self.state.reset()

    def stats(self) -> dict[str, Any]:
        return self.state.snapshot()

    async def __aenter__(self) -> FakeUpstream:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def start_fake_upstream(host: str = "127.0.0.1", port: int = 0, **opts: Any) -> FakeUpstream:
    """Start a fake upstream in this event loop; `opts` go to create_fake_app."""
    return await FakeUpstream(host, port, **opts).start()


def run_fake_upstream(host: str, port: int, **opts: Any) -> None:
    """Serve a fake upstream until interrupted (the CLI entry point)."""

    def announce(_message: str) -> None:
        # run_app calls this once the socket is bound, so scripts can wait for it.
        print(f"fake upstream listening on http://{host}:{port}", flush=True)

    web.run_app(
        create_fake_app(**opts),
        host=host,
        port=port,
        print=announce,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=_SHUTDOWN_TIMEOUT,
    )
