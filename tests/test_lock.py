"""The lock pins every dependency keyreid declares, so a fresh machine installs the tested set."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_every_declared_dependency_is_pinned_exactly():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "pose"):
        declared |= {_name(r) for r in project["optional-dependencies"][extra]}
    pinned = {}
    for line in (ROOT / "requirements-lock.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            assert "==" in line, f"lock line {line!r} is not an exact pin"
            name, version = line.split("==")
            pinned[name.lower().replace("_", "-")] = version
    missing = sorted(declared - set(pinned))
    assert not missing, f"declared but not pinned in requirements-lock.txt: {missing} (run make lock)"
    assert pinned["torch"] == "2.14.1" and pinned["torchvision"] == "0.29.1"
