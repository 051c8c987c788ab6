"""Loading the config for a command: every problem printed on its own line, then exit 1."""

from __future__ import annotations

import sys

import click

from .config import ConfigError, Snapshot, load_config


def load_or_exit(path: str) -> Snapshot:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
