"""The lock file pins every dependency the project declares, at a version the declaration allows."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]


def _pins() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and " " not in version and ";" not in version, f"not an exact pin: {line!r}"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["test"]]]
    pins = _pins()
    missing, outside = [], []
    for requirement in declared:
        name = canonicalize_name(requirement.name)
        if name == "torch":  # TORCH_SPEC chooses the CPU or the CUDA build
            continue
        if name not in pins:
            missing.append(str(requirement))
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            outside.append(f"{requirement} (locked {pins[name]})")
    assert not missing, f"declared but not in requirements.lock (run `make lock`): {missing}"
    assert not outside, f"locked outside the declared range (run `make lock`): {outside}"
    assert "torch" not in pins and "orthoseg" not in pins


def test_the_environment_and_the_image_install_from_the_lock() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert '-c $(LOCK) -e ".[test]"' in makefile and "$(STAMP): pyproject.toml $(LOCK)" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "-c requirements.lock -r /home/ray/requirements.txt" in dockerfile
    ray_pin = _pins()[canonicalize_name("ray")]
    assert f"ARG RAY_VERSION={ray_pin}" in dockerfile  # the image's Ray base is the version tested
