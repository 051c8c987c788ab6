"""`bluesminds serve` and `bluesminds fake-upstream`."""

from __future__ import annotations

import asyncio
import os

import click

from ..server import serve_until_signal
from .loading import load_or_exit
from .options import configure_logging, default_config, ensure_database, ensure_free, serving, use_uvloop


@click.command()
@click.option("--config", "config_path", default=default_config, show_default="config or $BLUESMINDS_CONFIG",
              type=click.Path())
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", default=None, type=int, help="Override server.port.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Processes sharing the port (SO_REUSEPORT); more than 1 needs limits.backend: redis://…")
@click.option("--worker", "is_worker", is_flag=True, hidden=True,
              help="Run as one worker of `serve --workers N` (started by the supervisor).")
def serve(config_path: str, host: str | None, port: int | None, workers: int, is_worker: bool) -> None:
    """Run the gateway."""
    from ..app import create_app

    snapshot = load_or_exit(config_path)
    host = host or snapshot.server.host
    port = snapshot.server.port if port is None else port
    if workers > 1:
        _check_workers(snapshot, workers)
    if not is_worker:
        ensure_free(host, port, "--port")
        ensure_database(snapshot.database)
    configure_logging(snapshot.server.log_level, snapshot.server.log_format)
    if workers > 1:
        raise SystemExit(_supervise(config_path, host, port, workers))
    use_uvloop()

    async def run() -> None:
        app = create_app(config_path)
        await serving(serve_until_signal(app, host, port, reuse_port=is_worker), host, port, "--port")

    asyncio.run(run())


def _check_workers(snapshot, workers: int) -> None:
    if not snapshot.limits.shared:
        raise click.ClickException(
            f"--workers {workers} needs a shared limiter (limits.backend: redis://host:port/db): "
            f"with limits.backend: memory each worker would count every limit on its own, "
            f"letting {workers} times the rpm, quotas and budgets through")
    if snapshot.server.metrics.access == "listener":
        raise click.ClickException(
            f"--workers {workers} cannot share server.metrics.listen (each worker has its own "
            f"metrics); use server.metrics.access: admin or open and scrape the main port")


def _supervise(config_path: str, host: str, port: int, workers: int) -> int:
    from ..limits import WORKERS_ENV
    from ..supervisor import Supervisor, reserve_port, worker_argv

    held = reserve_port(host, port)
    port = held.getsockname()[1]
    click.echo(f"supervising {workers} workers on http://{host}:{port}", err=True)
    env = {**os.environ, WORKERS_ENV: str(workers)}
    try:
        return Supervisor(worker_argv(config_path, host, port), workers, env=env).run()
    finally:
        held.close()


@click.command("fake-upstream")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8090, show_default=True, type=int)
@click.option("--latency", default=0.0, show_default=True, type=float, help="Seconds before each answer.")
@click.option("--stream-chunks", default=5, show_default=True, type=int)
@click.option("--chunk-delay", default=0.0, show_default=True, type=float, help="Seconds between stream chunks.")
@click.option("--name", default="fake", show_default=True)
@click.option("--api-key", default=None, help="Require this bearer key.")
def fake_upstream(host: str, port: int, latency: float, stream_chunks: int, chunk_delay: float,
                  name: str, api_key: str | None) -> None:
    """Run the built-in fake OpenAI-compatible upstream (for demos, tests and benchmarks)."""
    from ..fake_upstream import run_fake_upstream

    ensure_free(host, port, "--port")
    use_uvloop()
    run_fake_upstream(host, port, latency=latency, stream_chunks=stream_chunks, chunk_delay=chunk_delay,
                      name=name, api_key=api_key)
