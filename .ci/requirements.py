"""Prints pyproject.toml's dependencies and the named extras as a requirements file, so that
`make` installs them without building hashpivot (the wheel is built once, by `make wheel`)."""

import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python < 3.11: the Makefile installs tomli
    import tomli as tomllib

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
extras, name = project["optional-dependencies"], project["name"]


def expand(requirement: str, seen: set) -> list:
    """A self-reference such as `hashpivot[serve,distributed]` stands for those extras."""
    if not requirement.startswith(name + "["):
        return [requirement]
    wanted = requirement[len(name) + 1 : requirement.index("]")].split(",")
    return [r for extra in wanted if extra not in seen for r in resolve(extra.strip(), seen)]


def resolve(extra: str, seen: set) -> list:
    seen.add(extra)
    return [r for req in extras[extra] for r in expand(req, seen)]


seen: set = set()
lines = list(project["dependencies"]) + [r for e in sys.argv[1:] for r in resolve(e, seen)]
print("\n".join(dict.fromkeys(lines)))
