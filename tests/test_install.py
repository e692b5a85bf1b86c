"""The install is reproducible: the locks, the bounds they must satisfy, and who installs from them.

Pure file checks (plus the installed distributions' own metadata for extras): no network, no
Docker, no virtualenv is built. docs/dependencies.md explains the scheme.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
MAKEFILE = ROOT / "Makefile"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DOCKERIGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
REQUIREMENTS = ROOT / "requirements"
BOOTSTRAP_LOCK = REQUIREMENTS / "bootstrap.txt"
RUNTIME_LOCK = REQUIREMENTS / "runtime.txt"
DEV_LOCK = REQUIREMENTS / "dev.txt"
TOOLS_LOCK = REQUIREMENTS / "tools.txt"
LOCKS = (BOOTSTRAP_LOCK, RUNTIME_LOCK, DEV_LOCK, TOOLS_LOCK)
HASH = re.compile(r"--hash=sha256:[0-9a-f]{64}")
DIGEST_PINNED = re.compile(r"[\w.-]+(/[\w.-]+)*:[\w.-]+@sha256:[0-9a-f]{64}")


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def version(self) -> Version:
        (spec,) = self.requirement.specifier
        return Version(spec.version)

    @property
    def applies_here(self) -> bool:
        marker = self.requirement.marker
        return marker is None or marker.evaluate()


def read_lock(path: Path) -> dict[str, list[Pin]]:
    """A hashed requirements file: one `name==version [; marker]` per entry, then its `--hash`es."""
    pins: dict[str, list[Pin]] = {}
    for raw in path.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement_text, *hash_options = line.split(" --hash=")
        assert not requirement_text.startswith("-"), f"{path.name}: an option, not a pin: {line}"
        requirement = Requirement(requirement_text)
        hashes = tuple(f"--hash={option.strip()}" for option in hash_options)
        assert all(HASH.fullmatch(h) for h in hashes), f"{path.name}: {requirement.name}: {hashes}"
        pins.setdefault(canonicalize_name(requirement.name), []).append(Pin(requirement, hashes))
    return pins


def requirements(group: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return [Requirement(text) for text in texts]


def declared(*groups: str) -> list[Requirement]:
    """The runtime dependencies and those of the named extras, following `citygrid[...]` inside."""
    found = requirements()
    pending = list(groups)
    seen: set[str] = set()
    while pending:
        group = pending.pop()
        if group in seen:
            continue
        seen.add(group)
        for requirement in requirements(group):
            if canonicalize_name(requirement.name) == canonicalize_name(PYPROJECT["project"]["name"]):
                pending.extend(requirement.extras)
            else:
                found.append(requirement)
    return found


LOCKED_GROUPS = {RUNTIME_LOCK: (), DEV_LOCK: ("dev",)}


def logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def make_variables(text: str) -> dict[str, str]:
    variables = {}
    for line in logical_lines(text):
        match = re.match(r"([A-Za-z_]+)\s*(?::=|\?=|=)\s*(.*)$", line)
        if match:
            variables[match.group(1)] = match.group(2).strip()
    return variables


def expand(text: str, variables: dict[str, str]) -> str:
    for _ in range(10):
        expanded = re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), text)
        if expanded == text:
            return expanded
        text = expanded
    return text


def make_rule(target: str) -> tuple[list[str], list[str]]:
    """The prerequisites and the expanded recipe lines of one Makefile rule."""
    text = MAKEFILE.read_text(encoding="utf-8")
    variables = make_variables(text)
    lines = logical_lines(text)
    for index, line in enumerate(lines):
        head, colon, prerequisites = line.partition(":")
        if colon and not prerequisites.startswith("=") and head.strip() == target:
            recipe = []
            for recipe_line in lines[index + 1 :]:
                if not recipe_line.startswith("\t"):
                    break
                recipe.append(expand(recipe_line.strip(), variables))
            return expand(prerequisites, variables).split(), recipe
    raise AssertionError(f"the Makefile has no rule for {target}")


def pip_installs(commands: list[str]) -> list[str]:
    return [command.strip() for line in commands for command in line.split("&&") if "pip install" in command]


def installs_lock(command: str) -> str | None:
    """The lock a `pip install` installs from, provided it checks every hash and adds nothing."""
    match = re.search(r"-r\s+(requirements/[\w.-]+\.txt)", command)
    if match and "--require-hashes" in command and "--no-deps" in command:
        return match.group(1)
    return None


def installs_only_the_project(command: str) -> bool:
    return "--no-deps" in command and re.search(r"\s(-e\s+)?\.(\s|$)", f"{command} ") is not None


def dockerfile_instructions() -> list[tuple[str, str]]:
    instructions = []
    for line in logical_lines(DOCKERFILE.read_text(encoding="utf-8")):
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


# --- the locks -----------------------------------------------------------------------------------


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_every_lock_entry_is_an_exact_release_with_its_hashes(lock):
    pins = read_lock(lock)
    assert pins
    for name, entries in pins.items():
        for pin in entries:
            (spec,) = pin.requirement.specifier
            assert spec.operator == "==", f"{lock.name}: {name} is not pinned with =="
            assert pin.requirement.url is None, f"{lock.name}: {name} comes from a URL"
            assert pin.hashes, f"{lock.name}: {name} has no --hash=sha256:"


@pytest.mark.parametrize("lock", LOCKS, ids=lambda path: path.name)
def test_every_lock_names_the_command_that_regenerates_it(lock):
    header = lock.read_text(encoding="utf-8").split("\n", 3)[:3]
    assert any(line.strip() == "#    make lock" for line in header), header
    _, recipe = make_rule("lock")
    assert any(f"-o {lock.relative_to(ROOT).as_posix()}" in line for line in recipe), lock.name


@pytest.mark.parametrize("lock", list(LOCKED_GROUPS), ids=lambda path: path.name)
def test_every_dependency_in_pyproject_is_pinned_with_a_hash_in_its_lock(lock):
    pins = read_lock(lock)
    for requirement in declared(*LOCKED_GROUPS[lock]):
        entries = [pin for pin in pins.get(canonicalize_name(requirement.name), []) if pin.applies_here]
        assert entries, f"{lock.name} does not pin {requirement.name}"
        assert all(pin.hashes for pin in entries)


@pytest.mark.parametrize("lock", list(LOCKED_GROUPS), ids=lambda path: path.name)
def test_every_pin_satisfies_the_bounds_in_pyproject(lock):
    pins = read_lock(lock)
    for requirement in declared(*LOCKED_GROUPS[lock]):
        for pin in pins.get(canonicalize_name(requirement.name), []):
            assert requirement.specifier.contains(pin.version, prereleases=True), (
                f"{lock.name}: {requirement.name}=={pin.version} is outside {requirement.specifier}"
            )


@pytest.mark.parametrize("lock", list(LOCKED_GROUPS), ids=lambda path: path.name)
def test_the_extras_pyproject_asks_for_are_locked_too(lock):
    pins = read_lock(lock)
    for requirement in declared(*LOCKED_GROUPS[lock]):
        if not requirement.extras:
            continue
        (pin,) = [p for p in pins[canonicalize_name(requirement.name)] if p.applies_here]
        try:
            distribution = importlib.metadata.distribution(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{requirement.name} is not installed here: its extras cannot be read")
        if Version(distribution.version) != pin.version:
            pytest.skip(f"{requirement.name} {distribution.version} is installed, the lock has {pin.version}")
        for text in distribution.requires or []:
            needed = Requirement(text)
            marker = needed.marker
            if marker is None or "extra" not in str(marker):
                continue
            if any(marker.evaluate({"extra": extra}) for extra in requirement.extras):
                assert canonicalize_name(needed.name) in pins, (
                    f"{lock.name}: {requirement} needs {needed.name}, which is not locked"
                )


def test_the_image_lock_agrees_with_the_dev_lock_and_holds_no_dev_tool():
    runtime, dev = read_lock(RUNTIME_LOCK), read_lock(DEV_LOCK)
    for name, entries in runtime.items():
        assert name in dev, f"{name} is in the image but not in the dev environment"
        assert {pin.version for pin in entries} == {pin.version for pin in dev[name]}, name
    dev_only = {canonicalize_name(r.name) for r in declared("dev")} - {
        canonicalize_name(r.name) for r in declared()
    }
    assert dev_only
    assert not dev_only & set(runtime), dev_only & set(runtime)


def test_the_bootstrap_lock_pins_pip_and_a_setuptools_the_build_accepts():
    pins = read_lock(BOOTSTRAP_LOCK)
    assert "pip" in pins
    for text in PYPROJECT["build-system"]["requires"]:
        requirement = Requirement(text)
        (pin,) = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(pin.version)


# --- who installs from them ------------------------------------------------------------------------


def test_make_installs_exactly_the_locks_with_require_hashes():
    prerequisites, recipe = make_rule("$(STAMP)")
    installs = pip_installs(recipe)
    locks = [installs_lock(command) for command in installs]
    assert [lock for lock in locks if lock] == ["requirements/bootstrap.txt", "requirements/dev.txt"], (
        installs
    )
    for command, lock in zip(installs, locks, strict=True):
        assert lock or installs_only_the_project(command), f"not from a lock: {command}"
    assert not any("--upgrade" in line for line in recipe), "pip is upgraded only through the lock"
    assert {"pyproject.toml", "requirements/bootstrap.txt", "requirements/dev.txt"} <= set(prerequisites)
    assert any("pip check" in line for line in recipe)


def test_ci_runs_the_make_targets_that_install_from_the_lock():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
    assert "pip install" not in ci


def test_the_image_installs_exactly_the_runtime_lock_with_require_hashes():
    runs = [rest for keyword, rest in dockerfile_instructions() if keyword == "RUN"]
    installs = pip_installs(runs)
    locks = [installs_lock(command) for command in installs]
    assert [lock for lock in locks if lock] == ["requirements/bootstrap.txt", "requirements/runtime.txt"]
    for command, lock in zip(installs, locks, strict=True):
        assert lock or installs_only_the_project(command), f"not from a lock: {command}"
        if lock:
            assert "--only-binary=:all:" in command, "the image compiles nothing"
    assert not any("--upgrade" in command for command in installs)
    admitted = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    for lock in filter(None, locks):
        assert f"!{lock}" in admitted, f"the build context leaves out {lock}"


def test_every_base_image_is_pinned_by_digest_to_the_python_the_locks_target():
    bases = [rest.split()[0] for keyword, rest in dockerfile_instructions() if keyword == "FROM"]
    assert len(bases) >= 2
    _, recipe = make_rule("lock")
    target = re.search(r"--python-version\s+(\d+\.\d+)", " ".join(recipe))
    assert target
    for base in bases:
        assert DIGEST_PINNED.fullmatch(base), f"{base} is not pinned by digest"
        tag = base.split("@", 1)[0].split(":", 1)[1]
        assert re.match(rf"{re.escape(target.group(1))}\.\d+-slim", tag), (
            f"{base}: not python {target.group(1)}"
        )
    assert len(set(bases)) == 1, "the build and runtime stages share one base"
