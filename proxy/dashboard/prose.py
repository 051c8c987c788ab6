"""Prose written for the API reference, as HTML: `backticked` spans become <code>.

The text comes from the route tables and the request schemas, not from users, but
it is escaped all the same, so a `<` in a description stays text.
"""

from __future__ import annotations

from markupsafe import Markup, escape


def code_spans(text: str | None) -> Markup:
    if not text:
        return Markup("")
    parts = str(text).split("`")
    if len(parts) % 2 == 0:
        # An odd number of backticks: the last one opens nothing and stays a backtick.
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    out = []
    for index, part in enumerate(parts):
        out.append(Markup("<code>%s</code>") % part if index % 2 else escape(part))
    return Markup("").join(out)
