"""The interface contract that every HSR pipeline meets, in the spirit of diffusers' `PipelineTesterMixin`."""

import inspect
import json

import numpy as np
import pytest
import torch

from hsr_diffusers import HSRPipeline
from hsr_diffusers.spectral import render_rgb, srgb_to_camera_rgb

from ..testing_utils import smooth_cube


class HSRPipelineTesterMixin:
    pipeline_class = None
    required_optional_params = {"rgb_consistency", "tile_size", "tile_overlap", "output_type", "return_dict"}

    def get_dummy_components(self) -> dict:
        raise NotImplementedError

    def get_dummy_inputs(self, seed: int = 0) -> dict:
        raise NotImplementedError

    def get_pipeline(self):
        pipe = self.pipeline_class(**self.get_dummy_components())
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @staticmethod
    def rgb8(height: int = 8, width: int = 8, seed: int = 0) -> np.ndarray:
        """A feasible 8-bit NTIRE-clean rendering of a reflectance-like cube."""
        return render_rgb(smooth_cube(height, width, seed=seed))

    def test_output_types_and_shapes(self):
        pipe = self.get_pipeline()
        cubes = pipe(**self.get_dummy_inputs()).cubes
        assert isinstance(cubes, np.ndarray) and cubes.shape == (1, 8, 8, 31) and cubes.dtype == np.float32
        cubes_pt = pipe(**self.get_dummy_inputs(), output_type="pt").cubes
        assert isinstance(cubes_pt, torch.Tensor) and cubes_pt.shape == (1, 31, 8, 8)
        np.testing.assert_allclose(cubes_pt.permute(0, 2, 3, 1).numpy(), cubes, atol=1e-6)

    def test_values_finite_and_in_unit_range(self):
        cubes = self.get_pipeline()(**self.get_dummy_inputs()).cubes
        assert np.all(np.isfinite(cubes)) and cubes.min() >= 0.0 and cubes.max() <= 1.0

    def test_dict_tuple_outputs_equivalent(self):
        pipe = self.get_pipeline()
        as_dict = pipe(**self.get_dummy_inputs()).cubes
        as_tuple = pipe(**self.get_dummy_inputs(), return_dict=False)[0]
        np.testing.assert_array_equal(as_dict, as_tuple)

    def test_save_load_round_trip(self, tmp_path):
        pipe = self.get_pipeline()
        before = pipe(**self.get_dummy_inputs()).cubes
        pipe.save_pretrained(tmp_path)
        assert list(tmp_path.glob("unet/*.safetensors")), "weights must be saved as safetensors"
        assert not list(tmp_path.rglob("*.bin")) and not list(tmp_path.rglob("*.pt"))
        loaded = self.pipeline_class.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        after = loaded(**self.get_dummy_inputs()).cubes
        assert np.abs(before - after).max() < 1e-4

    def test_hsr_pipeline_dispatch_and_wavelengths(self, tmp_path):
        pipe = self.get_pipeline()
        pipe.save_pretrained(tmp_path)
        loaded = HSRPipeline.from_pretrained(tmp_path)
        assert type(loaded) is self.pipeline_class
        assert loaded.config.wavelengths == list(range(400, 701, 10))
        assert json.loads((tmp_path / "model_index.json").read_text())["_class_name"] == self.pipeline_class.__name__

    def test_components_match_init(self):
        pipe = self.get_pipeline()
        init_params = set(inspect.signature(self.pipeline_class.__init__).parameters) - {"self"}
        assert set(pipe.components) <= init_params
        assert set(self.get_dummy_components()) <= set(pipe.components)

    def test_call_signature(self):
        parameters = inspect.signature(self.pipeline_class.__call__).parameters
        assert "image" in parameters
        missing = self.required_optional_params - set(parameters)
        assert not missing, f"__call__ lacks {missing}"
        assert parameters["output_type"].default == "np" and parameters["return_dict"].default is True

    def test_rgb_consistency_reproduces_input(self):
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        inputs["image"] = self.rgb8(12, 10)
        cubes = pipe(**inputs).cubes
        rendered = render_rgb(cubes[0], mode="linear")
        assert np.abs(rendered - inputs["image"] / 255.0).max() <= 1 / 255
        # Re-rendering through the challenge pipeline gives back the input within one level.
        assert np.abs(render_rgb(cubes[0]).astype(int) - inputs["image"].astype(int)).max() <= 1

    def test_any_image_size_is_padded_and_cropped(self):
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        inputs["image"] = self.rgb8(13, 7)
        assert pipe(**inputs).cubes.shape == (1, 13, 7, 31)

    def test_input_types_agree(self):
        from PIL import Image

        pipe = self.get_pipeline()
        rgb8 = self.rgb8()
        images = (
            (rgb8, None),
            (Image.fromarray(rgb8), "linear"),
            (rgb8.astype(np.float32) / 255, None),
            (torch.from_numpy(rgb8 / 255).permute(2, 0, 1), "linear"),
        )
        results = []
        for image, input_space in images:
            inputs = self.get_dummy_inputs()
            inputs["image"] = image
            results.append(pipe(**inputs, input_space=input_space).cubes)
        for result in results[1:]:
            np.testing.assert_allclose(result, results[0], atol=1e-5)
        inputs = self.get_dummy_inputs()
        inputs["image"] = [rgb8, rgb8]
        assert pipe(**inputs).cubes.shape[0] == 2

    def test_photos_are_converted_from_srgb(self):
        # A PIL image is a photo: by default the pipeline converts its sRGB to the model's camera RGB with the
        # pipeline's own response, exactly as `srgb_to_camera_rgb` does; `input_space` overrides either default.
        from PIL import Image

        pipe = self.get_pipeline()
        photo = self.rgb8(seed=2)
        camera = srgb_to_camera_rgb(photo.astype(np.float32) / 255, pipe.config.response, pipe.config.wavelengths)

        def run(image, **kwargs):
            return pipe(**{**self.get_dummy_inputs(), "image": image, **kwargs}).cubes

        converted = run(camera)
        np.testing.assert_array_equal(run(Image.fromarray(photo)), converted)
        np.testing.assert_array_equal(run(photo, input_space="srgb"), converted)
        np.testing.assert_array_equal(
            run(torch.from_numpy(photo / 255).permute(2, 0, 1), input_space="srgb"), converted
        )
        assert np.abs(run(Image.fromarray(photo), input_space="linear") - converted).max() > 1e-3
        with pytest.raises(ValueError, match="input_space"):
            run(photo, input_space="sRGB")

    def test_tiled_equals_untiled_when_one_tile(self):
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        inputs["image"] = self.rgb8(16, 16)
        untiled = pipe(**inputs).cubes
        inputs.update({k: v for k, v in self.get_dummy_inputs().items() if k != "image"})
        tiled = pipe(**inputs, tile_size=32, tile_overlap=4).cubes
        np.testing.assert_allclose(tiled, untiled, atol=1e-6)

    def test_tiling_has_no_seams(self):
        pipe = self.get_pipeline()
        inputs = self.get_dummy_inputs()
        inputs["image"] = self.rgb8(40, 40, seed=3)
        untiled = pipe(**inputs).cubes
        inputs.update({k: v for k, v in self.get_dummy_inputs().items() if k != "image"})
        tiled = pipe(**inputs, tile_size=24, tile_overlap=8).cubes
        assert tiled.shape == untiled.shape
        # The error along tile borders is no worse than in the interior (no visible seams).
        error = np.abs(tiled - untiled).mean(axis=(0, 3))
        seam_rows = error[[15, 16, 23, 24], :].mean()
        assert seam_rows <= 3 * error.mean() + 1e-3

    def test_callback_on_tile_end_hands_over_every_row_once(self):
        # The rows handed over, in order, make up exactly the returned cubes; returning None for them keeps nothing.
        pipe = self.get_pipeline()
        image = self.rgb8(40, 36, seed=3)

        def inputs():  # a fresh generator for every call
            return {**self.get_dummy_inputs(), "image": image, "tile_size": 16, "tile_overlap": 4}

        calls, blocks = [], []

        def collect(pipeline, tiles_done, callback_kwargs):
            assert pipeline is pipe
            calls.append((tiles_done, callback_kwargs["num_tiles"]))
            blocks.append((callback_kwargs["top"], callback_kwargs["cubes"]))

        expected = pipe(**inputs()).cubes
        pipe(**inputs(), callback_on_tile_end=collect)
        tiles = pipe.image_processor.num_tiles(40, 36, 16, 4)
        assert calls[-1] == (tiles, tiles) and [done for done, _ in calls] == sorted({done for done, _ in calls})
        tops = [top for top, _ in blocks]
        assert tops[0] == 0 and all(top + len(rows[0]) == after for (top, rows), after in zip(blocks, tops[1:] + [40]))
        np.testing.assert_array_equal(np.concatenate([rows for _, rows in blocks], axis=1), expected)

        def drop(pipeline, tiles_done, callback_kwargs):
            return {"cubes": None, "uncertainty": None}

        output = pipe(**inputs(), callback_on_tile_end=drop)
        assert output.cubes is None and output.uncertainty is None

    def test_dtype_move(self):
        pipe = self.get_pipeline()
        pipe.to(torch.float64)
        assert pipe.unet.dtype == torch.float64
        cubes = pipe(**self.get_dummy_inputs()).cubes
        assert np.all(np.isfinite(cubes))
