"""Log output: `server.log_format` text (the default) or json, one record per line.

In JSON every record is one object on one line: `ts`, `level`, `logger`,
`message`, and `exception` when there is one; an access line's fields
(proxy/access_log.py) are keys of their own. JSON escaping keeps a CR/LF a
client put in a model name inside its string, and every value is bounded, as
the text format's are, so a line can neither be forged nor flood the log.

The handler is the root logger's, installed once by `configure` when the
process starts (`bluesminds serve`); `setup` makes a reload switch the format
of that handler, and only of handlers installed here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

import orjson
from aiohttp import web

from ..appkeys import CONFIG

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
MAX_MESSAGE = 8 * 1024  # a message or traceback; the access line's values have their own bound
FIELDS_ATTR = "bluesminds_fields"  # set on an access record by proxy/access_log.py


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        out: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": _bounded(record.getMessage()),
        }
        fields = getattr(record, FIELDS_ATTR, None)
        if fields:
            for name, value in fields.items():
                out.setdefault(name, value)
        if record.exc_info:
            out["exception"] = _bounded(self.formatException(record.exc_info))
        elif record.exc_text:
            out["exception"] = _bounded(record.exc_text)
        if record.stack_info:
            out["stack"] = _bounded(self.formatStack(record.stack_info))
        try:
            return orjson.dumps(out, default=str).decode()
        except TypeError:
            # A lone surrogate (orjson refuses them): the stdlib escapes it as \udxxx.
            return json.dumps(out, default=str, ensure_ascii=True)


def formatter_for(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


class _GatewayHandler(logging.StreamHandler):
    """Marks the handler this module installed, so a reload restyles it and nothing else."""


def configure(level: str, fmt: str = "text", *, stream: IO[str] | None = None) -> logging.Handler:
    """The process's logging: a root handler on stderr (or `stream`) in `fmt`."""
    root = logging.getLogger()
    if any(not isinstance(h, _GatewayHandler) for h in root.handlers):
        # Someone else owns the process's logging (an embedding app, a test runner):
        # leave it alone, as logging.basicConfig does.
        return root.handlers[0]
    for old in list(root.handlers):
        root.removeHandler(old)
    out = handler(fmt, stream if stream is not None else sys.stderr)
    root.addHandler(out)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return out


def handler(fmt: str, stream: IO[str]) -> logging.Handler:
    """A handler writing to `stream` in `fmt`, restyled by a reload."""
    out = _GatewayHandler(stream)
    out.setFormatter(formatter_for(fmt))
    return out


def apply_format(fmt: str) -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _GatewayHandler):
            handler.setFormatter(formatter_for(fmt))


def setup(app: web.Application) -> None:
    """A reload that changes `server.log_format` restyles the process's handler."""
    def on_reload(old, new) -> None:
        if old.server.log_format != new.server.log_format:
            apply_format(new.server.log_format)

    app[CONFIG].subscribe(on_reload)


def _bounded(text: str) -> str:
    extra = len(text) - MAX_MESSAGE
    return text if extra <= 0 else text[:MAX_MESSAGE] + f"...(+{extra} chars)"
