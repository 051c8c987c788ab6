"""The fenced blocks of a markdown guide, by section, so a test runs exactly what the guide says."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)


@dataclass(frozen=True)
class Block:
    section: str  # the `## ` heading above it
    lang: str
    text: str


def blocks(path: Path) -> list[Block]:
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        headings = re.findall(r"^## (.+)$", text[:match.start()], re.M)
        found.append(Block(headings[-1] if headings else "", match.group(1), match.group(2)))
    return found


def commands(block: Block) -> list[str]:
    """One shell command per line, a heredoc kept whole with its body."""
    out: list[str] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heredoc = re.search(r"<<'(\w+)'$", line)
        if heredoc:
            end = lines.index(heredoc.group(1), i + 1)
            out.append("\n".join(lines[i:end + 1]))
            i = end + 1
            continue
        if line.strip() and not line.lstrip().startswith("#"):
            out.append(line)
        i += 1
    return out
