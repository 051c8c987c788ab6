"""Loading the config for a command: every problem printed on its own line, then exit 1.

Warnings (a model without pricing, a trailing /v1 stripped from a URL) are
printed too, prefixed `warning:`, so `check-config` shows what a reload logs.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from ..config import ConfigError, Snapshot
from ..config.build import build_snapshot
from ..config.source import read_source


def load_or_exit(path: str, *, show_warnings: bool = False) -> Snapshot:
    try:
        snapshot, warnings = build_snapshot(read_source(path), path, environ=os.environ)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(str(problem), err=True)
        sys.exit(1)
    log = logging.getLogger("bluesminds.config")
    for warning in warnings:
        if show_warnings:
            click.echo(f"warning: {warning}", err=True)
        else:
            log.warning("config warning: %s", warning)
    return snapshot
