"""The README's Python snippet, read from README.md by the test itself, runs as written with the bundled weights."""

import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest


REPO_ROOT = Path(__file__).resolve().parents[1]


def readme_snippet() -> str:
    """The first ```python block of README.md that uses `HSRPipeline`."""
    blocks = re.findall(
        r"^```python\n(.*?)^```", (REPO_ROOT / "README.md").read_text(), flags=re.DOTALL | re.MULTILINE
    )
    snippets = [block for block in blocks if "HSRPipeline" in block]
    assert snippets, "README.md has no ```python block that uses HSRPipeline"
    return snippets[0]


def test_readme_python_snippet_runs(tmp_path, monkeypatch, capsys):
    # The snippet opens the example photos by relative path: run it in a folder holding 48x64 crops of them, so that
    # it takes a second (the bundled DDPM samples one tile in one step) instead of the whole photo's time.
    (tmp_path / "examples").mkdir()
    for photo in (REPO_ROOT / "examples").iterdir():
        if photo.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with PIL.Image.open(photo) as image:
                image.convert("RGB").crop((160, 100, 224, 148)).save(tmp_path / "examples" / photo.name)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    exec(compile(readme_snippet(), "README.md", "exec"), namespace)  # a stale README raises here

    # What the snippet's comments promise, under the names it gives them: a README that renames them fails here.
    missing = [name for name in ("cube", "sigma", "preview") if name not in namespace]
    assert not missing, f"the README snippet no longer defines {missing}"
    cube, sigma, preview = (np.asarray(namespace[name]) for name in ("cube", "sigma", "preview"))
    assert cube.shape == sigma.shape == (48, 64, 31)  # (H, W, 31) mean and per-band standard deviation
    assert np.isfinite(cube).all() and 0 <= cube.min() and cube.max() <= 1
    assert np.isfinite(sigma).all() and sigma.min() >= 0 and sigma.max() > 0  # several samples: a spread
    assert preview.dtype == np.uint8 and preview.shape[-3:] == (48, 64, 3) and preview.size == 48 * 64 * 3
    printed = capsys.readouterr().out
    if "print(list_pretrained())" in readme_snippet():
        from hsr_diffusers import list_pretrained

        assert str(list_pretrained()) in printed


def test_a_stale_snippet_fails(monkeypatch):
    # The extraction finds the block, and running an outdated call raises: the check above can fail.
    snippet = readme_snippet().replace("HSRPipeline.from_pretrained(", "HSRPipeline.load(", 1)
    monkeypatch.chdir(REPO_ROOT)
    with pytest.raises(AttributeError):
        exec(compile(snippet, "README.md", "exec"), {"__name__": "__readme__"})
