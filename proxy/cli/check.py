"""`bluesminds check-config`: validate without starting anything."""

from __future__ import annotations

import click

from .demo import BUNDLED_DEMO_CONFIG
from .loading import load_or_exit
from .options import default_config


@click.command("check-config")
@click.argument("path", default=None, required=False, type=click.Path())
@click.option("--demo", "bundled", is_flag=True, help="Check the demo's bundled config instead of PATH.")
def check_config(path: str | None, bundled: bool) -> None:
    """Validate the config at PATH (a directory or one YAML file) without starting anything."""
    if bundled and path is not None:
        raise click.UsageError("give PATH or --demo, not both")
    path = str(BUNDLED_DEMO_CONFIG) if bundled else (path or default_config())
    snapshot = load_or_exit(path, show_warnings=True)
    click.echo(f"{path}: OK ({len(snapshot.upstreams)} upstreams, {len(snapshot.models)} models, "
               f"{len(snapshot.plans)} plans, digest {snapshot.digest})")
