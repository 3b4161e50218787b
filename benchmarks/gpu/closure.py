"""Print name==version for every installed distribution the given ones need (recursively,
extras included, markers evaluated for the target Python), except torch's own stack and
numpy, which the GPU machine brings. Used by fetch_wheels.sh."""

from __future__ import annotations

import importlib.metadata as md
import platform
import re
import sys

from packaging.requirements import Requirement

SKIP = {"torch", "numpy", "triton", "setuptools"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def main() -> None:
    python, roots = sys.argv[1], sys.argv[2:]
    here = platform.python_version()
    full = here if here.startswith(f"{python}.") else f"{python}.0"
    env = {"python_version": python, "python_full_version": full}
    pins: dict[str, str] = {}
    todo: list[tuple[str, frozenset[str]]] = [(r, frozenset()) for r in roots]
    done: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, extras = todo.pop()
        key = (canonical(name), extras)
        if key in done or key[0] in SKIP or key[0].startswith("nvidia-"):
            continue
        done.add(key)
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            print(f"closure.py: {name} is not installed here; skipped", file=sys.stderr)
            continue
        if canonical(name) != "grader":
            pins[canonical(name)] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            wanted = not req.marker or any(
                req.marker.evaluate({**env, "extra": extra}) for extra in (extras or {""})
            )
            if wanted:
                todo.append((req.name, frozenset(req.extras)))
    for name, version in sorted(pins.items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main()
