"""`bluesminds openapi`: the document on standard output, for integrators' code generators."""

from __future__ import annotations

import click

from .document import build_document, encode
from .routes import _version


@click.command("openapi")
def openapi_command() -> None:
    """Print the OpenAPI 3.1 description of every route (as served at /api/openapi.json)."""
    body, _ = encode(build_document(version=_version()))
    click.echo(body.decode())
