"""Print ``name==floor`` for the named dependencies of pyproject.toml: a pip constraints file that installs
the lowest versions the project declares (``make test-oldest``).

    python tools/floors.py torch transformers accelerate tokenizers safetensors numpy > floors.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def floors(pyproject: Path, names: list[str]) -> list[str]:
    """``name==X`` for each ``name>=X`` among the project's dependencies; an error for a name without a floor."""
    declared = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    found = {}
    for requirement in declared:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][^,;\s]*)", requirement.strip())
        if match:
            found[match.group(1).lower()] = match.group(2)
    missing = [n for n in names if n.lower() not in found]
    if missing:
        sys.exit(f"error: no '>=' floor declared in {pyproject} for {', '.join(missing)}")
    return [f"{n}=={found[n.lower()]}" for n in names]


if __name__ == "__main__":
    print("\n".join(floors(Path(__file__).resolve().parent.parent / "pyproject.toml", sys.argv[1:])))
