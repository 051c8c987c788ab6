"""`bluesminds demo`: the gateway on a bundled config, with fake upstreams, and a ready key."""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import click
import yaml

from ..server import serve_until_signal
from .loading import load_or_exit
from .options import configure_logging, ensure_database, ensure_free, serving, use_uvloop

BUNDLED_DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
DEMO_EMAIL = "demo@bluesminds.local"


def prepare_bundled(workdir: str, upstream_port: int | None) -> str:
    """The bundled config copied into `workdir` (its database lands there too)."""
    target = os.path.join(workdir, "gateway.yaml")
    text = BUNDLED_DEMO_CONFIG.read_text(encoding="utf-8")
    if upstream_port is not None:
        data = yaml.safe_load(text)
        for i, upstream in enumerate(data["upstreams"]):
            upstream["url"] = f"http://127.0.0.1:{upstream_port + i}"
        text = yaml.safe_dump(data, sort_keys=False)
    with open(target, "w", encoding="utf-8") as fh:
        fh.write(text)
    return target


@click.command()
@click.option("--config", "config_path", default=None, type=click.Path(),
              help="Run on this config instead of the bundled one; its 127.0.0.1 upstreams become fakes.")
@click.option("--host", default=None, help="Gateway address (default: server.host).")
@click.option("--port", default=None, type=int, help="Gateway port (default: server.port, 8080).")
@click.option("--upstream-port", default=None, type=int,
              help="Port of the first fake upstream on the bundled config; the next follow (default 8091).")
def demo(config_path: str | None, host: str | None, port: int | None, upstream_port: int | None) -> None:
    """Run the gateway on the bundled config with the built-in fake upstream, and print a ready key."""
    if config_path is not None and upstream_port is not None:
        raise click.UsageError("--upstream-port applies to the bundled config; with --config, "
                               "the fake upstreams listen where that config's upstream URLs say")
    with tempfile.TemporaryDirectory(prefix="bluesminds-demo-") as workdir:
        bundled = config_path is None
        _run(prepare_bundled(workdir, upstream_port) if bundled else config_path, host, port,
             "--upstream-port" if bundled else f"the upstream url in {config_path}")


def _run(config_path: str, host: str | None, port: int | None, upstream_flag: str) -> None:
    from ..app import create_app
    from ..fake_upstream import start_fake_upstream
    from .accounts import create_user_and_key

    snapshot = load_or_exit(config_path)
    demo_upstreams = [u for u in snapshot.upstreams if urlsplit(u.url).hostname == "127.0.0.1"]
    host = host or snapshot.server.host
    gateway_port = snapshot.server.port if port is None else port
    ensure_free(host, gateway_port, "--port")
    fake_ports = [urlsplit(u.url).port for u in demo_upstreams]
    for fake_port in fake_ports:
        ensure_free("127.0.0.1", fake_port, upstream_flag)
    configure_logging("warning")
    use_uvloop()
    ensure_database(snapshot.database)
    _, key = create_user_and_key(snapshot.database, DEMO_EMAIL, secrets.token_urlsafe(18), "pro", "demo")

    async def run() -> None:
        fakes = []
        for upstream, fake_port in zip(demo_upstreams, fake_ports):
            fakes.append(await serving(start_fake_upstream("127.0.0.1", fake_port, name=upstream.name),
                                       "127.0.0.1", fake_port, upstream_flag))

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
            await serving(serve_until_signal(create_app(config_path), host, gateway_port, ready=ready),
                          host, gateway_port, "--port")
        finally:
            for fake in fakes:
                await fake.stop()

    asyncio.run(run())
