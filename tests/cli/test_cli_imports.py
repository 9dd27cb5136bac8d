"""The command line answers `--help` without importing torch, and the package's top-level names load on first use."""

import subprocess
import sys

import pytest


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("argv", [["--help"], ["reconstruct", "--help"], ["data", "prepare", "--help"]])
def test_help_imports_neither_torch_nor_datasets(argv):
    # `hsr --help` took seconds when the package imported torch and diffusers up front.
    code = (
        "import sys\n"
        "from hsr_diffusers.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('torch', 'diffusers', 'datasets', 'accelerate') if m in sys.modules)\n"
        "print('heavy modules:', heavy, file=sys.stderr)\n"
    )
    result = run_python(code)
    assert "usage: hsr" in result.stdout
    assert "heavy modules: []" in result.stderr, result.stderr


def test_python_dash_m_forms_run_the_cli():
    # `accelerate launch -m hsr_diffusers.cli ...` runs the package's CLI as a module.
    for module in ("hsr_diffusers.cli", "hsr_diffusers"):
        result = subprocess.run(
            [sys.executable, "-m", module, "reconstruct", "--help"], capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0 and "accelerate launch -m hsr_diffusers.cli" in result.stdout


def test_readme_names_import_from_the_package():
    import hsr_diffusers
    from hsr_diffusers import HSRPipeline, list_pretrained, load_cube, save_cube  # noqa: F401

    assert {"load_cube", "save_cube", "HSRPipeline"} <= set(hsr_diffusers.__all__) <= set(dir(hsr_diffusers))
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        hsr_diffusers.not_a_name  # noqa: B018
