"""The `bluesminds` command: serve, demo, fake-upstream, check-config, and account tools."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import click

from .cli_accounts import keys, users
from .cli_config import load_or_exit
from .cli_usage import usage
from .server import serve_until_signal

DEFAULT_CONFIG = os.environ.get("BLUESMINDS_CONFIG", "config")


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")


def _use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


@click.group()
@click.version_option(package_name="bluesminds")
def main() -> None:
    """BluesMinds: one OpenAI-compatible API in front of your LiteLLM servers."""


@main.command("check-config")
@click.argument("path", default=DEFAULT_CONFIG, type=click.Path())
def check_config(path: str) -> None:
    """Validate the config at PATH (a directory or one YAML file) without starting anything."""
    snapshot = load_or_exit(path)
    click.echo(f"{path}: OK ({len(snapshot.upstreams)} upstreams, {len(snapshot.models)} models, "
               f"{len(snapshot.plans)} plans, digest {snapshot.digest})")


@main.command()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, type=click.Path())
@click.option("--host", default=None, help="Override server.host.")
@click.option("--port", default=None, type=int, help="Override server.port.")
def serve(config_path: str, host: str | None, port: int | None) -> None:
    """Run the gateway."""
    from .app import create_app

    snapshot = load_or_exit(config_path)
    _configure_logging(snapshot.server.log_level)
    _use_uvloop()

    async def run() -> None:
        app = create_app(config_path)
        await serve_until_signal(app, host or snapshot.server.host,
                                 snapshot.server.port if port is None else port)

    asyncio.run(run())


@main.command("fake-upstream")
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
    from .fake_upstream import run_fake_upstream

    _use_uvloop()
    run_fake_upstream(host, port, latency=latency, stream_chunks=stream_chunks, chunk_delay=chunk_delay,
                      name=name, api_key=api_key)


@main.command()
@click.option("--config", "config_path", default=DEFAULT_CONFIG, show_default=True, type=click.Path())
@click.option("--port", default=None, type=int, help="Gateway port (default: server.port).")
def demo(config_path: str, port: int | None) -> None:
    """Run the gateway on the bundled config with the built-in fake upstream, and print a ready key."""
    from .app import create_app
    from .cli_accounts import create_user_and_key
    from .fake_upstream import start_fake_upstream

    snapshot = load_or_exit(config_path)
    demo_upstreams = [u for u in snapshot.upstreams if u.url.startswith("http://127.0.0.1:")]
    _configure_logging("warning")
    _use_uvloop()
    email = "demo@bluesminds.local"
    _, key = create_user_and_key(snapshot.database.path, email, secrets.token_urlsafe(18), "pro", "demo")
    gateway_port = snapshot.server.port if port is None else port

    async def run() -> None:
        fakes = []
        for upstream in demo_upstreams:
            fake_port = int(upstream.url.rsplit(":", 1)[1].split("/")[0])
            fakes.append(await start_fake_upstream("127.0.0.1", fake_port, name=upstream.name))

        async def ready(bound: int) -> None:
            base = f"http://127.0.0.1:{bound}"
            model = next(iter(snapshot.models))
            click.echo(f"""
BluesMinds demo is running at {base} (fake upstreams: {', '.join(u.name for u in demo_upstreams)}).
Demo key (shown once): {key}

curl {base}/v1/chat/completions -H "Authorization: Bearer {key}" -H "Content-Type: application/json" -d '{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}'

python -c 'from openai import OpenAI; c = OpenAI(base_url="{base}/v1", api_key="{key}"); print(c.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": "Hello"}}]).choices[0].message.content)'

Press Ctrl+C to stop.""", err=False)

        try:
            await serve_until_signal(create_app(config_path), snapshot.server.host, gateway_port, ready=ready)
        finally:
            for fake in fakes:
                await fake.stop()

    asyncio.run(run())


main.add_command(users)
main.add_command(keys)
main.add_command(usage)
