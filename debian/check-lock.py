"""Fail unless the virtualenv holds exactly the versions the lock pins."""

import sys
from importlib.metadata import distributions
from pathlib import Path

BUILD_ONLY = {"setuptools"}  # the build backend, pinned for the build only


def norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def main(lock: str) -> int:
    pinned = {}
    for line in Path(lock).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pinned[norm(name)] = version
    installed = {norm(d.metadata["Name"]): d.version for d in distributions()}
    installed.pop("pulsed", None)
    wanted = {n: v for n, v in pinned.items() if n not in BUILD_ONLY}
    if installed != wanted:
        extra = sorted(set(installed.items()) ^ set(wanted.items()))
        print(f"check-lock: the venv differs from {lock}: {extra}", file=sys.stderr)
        return 1
    print(f"check-lock: {len(installed)} packages, as {lock} pins them")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
