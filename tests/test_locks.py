"""The dependency locks: the image's lock is the dev lock's subset at the same versions, both cover what
pyproject.toml asks for, every pin carries hashes, and this environment runs exactly the dev lock's versions."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def pins(lock: str) -> dict[str, tuple[str, Requirement]]:
    """Each pinned package of a lock file: its version and its requirement (with the environment marker)."""
    text = (REPO / lock).read_text()
    found: dict[str, tuple[str, Requirement]] = {}
    for entry in re.split(r"\n(?=[A-Za-z0-9])", text):
        first = entry.split(" \\")[0].strip()
        if not first or first.startswith("#"):
            continue
        requirement = Requirement(first)
        assert "--hash=sha256:" in entry, f"{lock}: {requirement.name} has no hash"
        (version,) = [spec.version for spec in requirement.specifier if spec.operator == "=="]
        found[canonicalize_name(requirement.name)] = (version, requirement)
    return found


def wanted(extra: str | None = None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] + (project["optional-dependencies"][extra] if extra else [])
    build = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    return {canonicalize_name(Requirement(n).name) for n in names + build}


def test_the_image_lock_is_the_dev_lock_at_the_same_versions() -> None:
    image, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    assert {name: image[name][0] for name in image} == {name: dev[name][0] for name in image}
    assert wanted() <= image.keys()
    assert wanted("dev") <= dev.keys()


def test_every_pin_fits_what_pyproject_asks_for() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    dev = pins("requirements-dev.lock")
    asked = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["dev"],
        *project["build-system"]["requires"],
    ]
    for text in asked:
        requirement = Requirement(text)
        version = dev[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version, prereleases=True), f"{text} is locked at {version}"


def test_this_environment_runs_the_locked_versions() -> None:
    # scripts/bootstrap installs requirements-dev.lock; CI and the demo run in what it made.
    differ = {}
    for name, (version, requirement) in pins("requirements-dev.lock").items():
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        installed = importlib.metadata.version(name)
        if installed != version:
            differ[name] = (installed, version)
    assert differ == {}, f"installed versions differ from requirements-dev.lock (installed, locked): {differ}"
