"""Installing ppml: ranges for a library, the exact tested versions in one lock file."""

from __future__ import annotations

import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from ppml.report import repo_root

ROOT = repo_root()


def _project():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _lock() -> dict[str, Version]:
    out = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, ver = line.partition("==")
            assert ver, f"requirements.lock: {line!r} is not an exact pin"
            out[canonicalize_name(name)] = Version(ver)
    return out


def _declared() -> list[Requirement]:
    p = _project()
    return [Requirement(r) for r in p["dependencies"] + p["optional-dependencies"]["dev"]]


def test_library_dependencies_are_ranges_not_pins():
    pinned = [str(r) for r in _declared() if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"pyproject.toml pins {pinned}: declare ranges, put exact versions in requirements.lock"


def test_lock_pins_every_declared_dependency_inside_its_range():
    lock = _lock()
    for req in _declared():
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is declared but not locked: run `make lock`"
        assert req.specifier.contains(lock[name], prereleases=True), \
            f"requirements.lock has {req.name}=={lock[name]}, outside the declared range {req.specifier}"
    assert "ppml" not in lock, "the lock must not pin ppml itself"
    assert (lock["torch"], lock["torchvision"]) == (Version("2.14.1"), Version("0.29.1"))


def test_make_ci_and_conda_install_with_the_lock():
    assert "-c requirements.lock -e '.[dev]'" in (ROOT / "Makefile").read_text()
    assert "- -c requirements.lock" in (ROOT / "environment.yml").read_text()
    assert "make test" in (ROOT / ".ci" / "run").read_text()
