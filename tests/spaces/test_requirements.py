"""The Space's requirements.txt installs as it stands: its lines are pins and this repository, pip builds the repository
line into hsr-diffusers from the Space folder (offline), the pins fall inside the package's own ranges, and (with
RUN_SLOW=1, against the package index) the whole file resolves in a clean virtual environment."""

import json
import subprocess
import sys
import venv

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..testing_utils import slow
from .conftest import REPO_DIR, SPACE_DIR


def requirement_lines() -> list[str]:
    lines = (line.strip() for line in (SPACE_DIR / "requirements.txt").read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins_and_paths() -> tuple[dict[str, str], list[str]]:
    """`{name: version}` of the `name==version` lines, and the local paths."""
    pins, paths = {}, []
    for line in requirement_lines():
        if line.startswith((".", "/")):
            paths.append(line)
            continue
        requirement = Requirement(line)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==" and not requirement.marker, f"not a pin: {line}"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins, paths


def pip_dry_run(python, arguments: list[str], report_path, timeout: float) -> dict:
    """`pip install --dry-run --report` run in the Space folder, where pip reads the requirements' relative paths."""
    command = [str(python), "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report_path), *arguments]
    result = subprocess.run(command, cwd=SPACE_DIR, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return json.loads(report_path.read_text())


@pytest.fixture(scope="module")
def repository_metadata(tmp_path_factory) -> dict:
    """The metadata pip builds from the requirements' path line, offline and without its dependencies (about 2 s)."""
    _, paths = pins_and_paths()
    assert len(paths) == 1, paths
    report = pip_dry_run(
        sys.executable,
        ["--no-deps", "--no-index", "--no-build-isolation", paths[0]],
        tmp_path_factory.mktemp("pip") / "report.json",
        timeout=120,
    )
    (item,) = report["install"]
    assert item["download_info"]["url"] == REPO_DIR.as_uri()
    return item["metadata"]


def test_requirements_install_the_package_from_this_repository(repository_metadata):
    assert repository_metadata["name"] == "hsr-diffusers"


def test_pins_fall_inside_the_package_ranges(repository_metadata):
    pins, _ = pins_and_paths()
    assert set(pins) == {"torch", "gradio"}
    # Core requirements, and those of the `demo` extra (gradio).
    ranges = {}
    for line in repository_metadata["requires_dist"]:
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": "demo"}):
            ranges[canonicalize_name(requirement.name)] = requirement.specifier
    for name, version in pins.items():
        assert ranges[name].contains(version, prereleases=True), f"{name}=={version} is outside {ranges[name]}"
    # The torch the CI installs first (the CPU build), so that the Space runs on what the tests ran on.
    assert f"torch=={pins['torch']}" in (REPO_DIR / ".ci" / "run").read_text()


def package_index_reachable(timeout: float = 5.0) -> bool:
    """Whether pip, with this machine's pip configuration, gets an answer from its package index within `timeout`."""
    command = [sys.executable, "-m", "pip", "index", "versions", "pip", "--timeout", str(timeout), "--retries", "0"]
    try:
        return subprocess.run(command, capture_output=True, timeout=4 * timeout).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@slow
def test_requirements_resolve_in_a_clean_venv(repository_metadata, tmp_path):
    """A new virtual environment with nothing installed resolves the whole file (package index needed; about 1 min)."""
    if not package_index_reachable():
        pytest.skip("the package index cannot be reached (`pip index versions pip` failed or timed out)")
    venv.create(tmp_path / "venv", with_pip=True)
    python = tmp_path / "venv" / ("Scripts" if sys.platform == "win32" else "bin") / "python"
    report = pip_dry_run(python, ["-r", "requirements.txt"], tmp_path / "report.json", timeout=1200)
    resolved = {canonicalize_name(item["metadata"]["name"]): item["metadata"]["version"] for item in report["install"]}
    pins, _ = pins_and_paths()
    assert resolved["hsr-diffusers"] == repository_metadata["version"]
    for name, version in pins.items():
        assert resolved[name].split("+")[0] == version, (name, resolved[name])
