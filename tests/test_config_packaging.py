"""Everything the code reads at run time ships in the wheel (`.ci/wheel-check` proves it end to end)."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "proxy"


def packaged(relative: str) -> bool:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        patterns = tomllib.load(fh)["tool"]["setuptools"]["package-data"]["proxy"]
    return any(fnmatch.fnmatch(relative, pattern) and relative.count("/") == pattern.count("/")
               for pattern in patterns)


def test_every_schema_and_the_demo_config_are_package_data() -> None:
    needed = sorted(str(p.relative_to(PACKAGE)) for p in (PACKAGE / "schemas").rglob("*.json"))
    needed.append("cli/demo.yaml")
    assert len(needed) > 20
    assert [name for name in needed if not packaged(name)] == []


def test_the_documented_schema_folder_is_the_packaged_one() -> None:
    assert (ROOT / "schemas").resolve() == PACKAGE / "schemas"
    assert (ROOT / "schemas" / "upstreams.schema.json").is_file()
