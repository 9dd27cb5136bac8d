"""`HSRPipeline.from_pretrained`: the names that never reach the Hub (paths that are not folders, Hub ids while
offline). The bundled models themselves are tested in test_bundled_models.py."""

import os
import time
from pathlib import Path

import pytest

from hsr_diffusers import HSRPipeline
from hsr_diffusers.pipelines.auto_pipeline import looks_like_path


@pytest.mark.parametrize("name", ["org/name", "name", "hsr-diffusers/ddpm-cave"])
def test_hub_ids_do_not_look_like_paths(name):
    assert not looks_like_path(name)


@pytest.mark.parametrize(
    "name", ["./missing", "../missing", "/no/such/hsr_model", "~/no_such_hsr_model", "a/b/c", "missing/", Path("x/y")]
)
def test_a_path_that_is_not_a_folder_is_named_without_the_hub(name):
    assert looks_like_path(name)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no such folder") as info:
        HSRPipeline.from_pretrained(name)
    assert time.perf_counter() - start < 5
    assert str(name) in str(info.value) and "hsr-diffusers/ddpm-cave" in str(info.value)  # lists what would load


def test_a_file_is_not_a_model_folder(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a folder"):
        HSRPipeline.from_pretrained(str(tmp_path / "model.safetensors"))


def test_an_uncached_hub_id_fails_fast_offline():
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # tests/conftest.py
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE is set") as info:
        HSRPipeline.from_pretrained("some-org/some-hsr-model")
    assert time.perf_counter() - start < 5
    assert "some-org/some-hsr-model" in str(info.value)
