"""The `bluesminds` command: serve, demo, fake-upstream, check-config, import, backup, and account tools.

One module per family of commands; this one is the click group that holds them.
"""

from __future__ import annotations

import click

from .accounts import keys, users
from .backup import backup
from .check import check_config
from .demo import demo
from .import_litellm import import_group
from .invoices import invoices
from .routes_explain import routes
from .serve import fake_upstream, serve
from .usage import usage
from ..openapi.cli import openapi_command


@click.group()
@click.version_option(package_name="bluesminds")
def main() -> None:
    """BluesMinds: one OpenAI-compatible API in front of your LiteLLM servers."""


for command in (check_config, serve, demo, fake_upstream, users, keys, usage, invoices,
                import_group, backup, openapi_command, routes):
    main.add_command(command)

__all__ = ["main"]
