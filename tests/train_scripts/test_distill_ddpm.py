"""`train_scripts/distill_ddpm.py`: one fast run from a tiny saved teacher; the convergence check is `@slow`."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.data.rendering import render_training_rgb
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS

from ..testing_utils import slow
from .conftest import TRAIN_SCRIPTS, common_args


def distill_args(dataset, output_dir, teacher, steps, *extra):
    """`common_args` without `--model_config`: the student's architecture is its teacher's."""
    args = common_args(dataset, output_dir, steps, "--distill_from", str(teacher), "--resolution", "32", *extra)
    index = args.index("--model_config")
    return args[:index] + args[index + 2 :]


def teacher_gap(student_dir, teacher_dir, rgb):
    """RMSE between the student's one-step sample and the teacher's default sample from the same initial noise."""
    cubes = []
    for folder, steps in ((student_dir, 1), (teacher_dir, None)):
        pipe = HSRDiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        cubes.append(pipe(rgb, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).cubes)
    return float(np.sqrt(np.mean((cubes[0] - cubes[1]) ** 2)))


def test_distillation_releases_a_one_step_student_of_its_teacher(tiny_dataset, tiny_ddpm_release, tmp_path):
    import distill_ddpm

    extra = ["--sam_weight", "0.1", "--model_card", "hsr-diffusion-cave.md"]
    distill_ddpm.main(distill_ddpm.parse_args(distill_args(tiny_dataset, tmp_path, tiny_ddpm_release, 2, *extra)))

    teacher, student = (HSRDiffusionPipeline.from_pretrained(p) for p in (tiny_ddpm_release, tmp_path))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert student.config.default_num_inference_steps == 1
    for key in ("residual_scale", "default_tile_size", "default_tile_overlap"):
        assert student.config[key] == teacher.config[key], key
    assert student.scheduler.config.prediction_type == teacher.scheduler.config.prediction_type
    for name, value in teacher.estimator.state_dict().items():
        assert torch.equal(student.estimator.state_dict()[name], value)
    student_weights = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    teacher_weights = load_file(tiny_ddpm_release / "unet" / "diffusion_pytorch_model.safetensors")
    assert student_weights.keys() == teacher_weights.keys()
    assert any(not torch.equal(student_weights[k], teacher_weights[k]) for k in teacher_weights)
    card = (tmp_path / "README.md").read_text()
    assert "distill_ddpm.py" in card and f"distilled into one step from the teacher `{tiny_ddpm_release}`" in card
    assert "(2-step samples" in card and "1 DDIMScheduler step," in card and "SAM weight 0.1" in card


def test_distillation_refuses_an_epsilon_teacher(tiny_dataset, tiny_ddpm_release, tmp_path):
    import distill_ddpm

    teacher = HSRDiffusionPipeline.from_pretrained(tiny_ddpm_release)
    teacher.scheduler.register_to_config(prediction_type="epsilon")
    teacher.save_pretrained(tmp_path / "teacher")
    args = distill_ddpm.parse_args(distill_args(tiny_dataset, tmp_path / "student", tmp_path / "teacher", 1))
    with pytest.raises(ValueError, match="epsilon"):
        distill_ddpm.main(args)
    assert not list((tmp_path / "student").glob("checkpoint-*"))


def test_blocks_copied_from_train_ddpm_match_it():
    """The loop shared with train_ddpm.py, marked `# Copied from train_ddpm.main` (this package's `make fix-copies`)."""
    source = (TRAIN_SCRIPTS / "distill_ddpm.py").read_text()
    target = (TRAIN_SCRIPTS / "train_ddpm.py").read_text()
    marked = r"# Copied from train_ddpm\.main(?: with (\w+)->(\w+))?\n(.*?)\n *# End of the copy from train_ddpm\.main"
    blocks = re.findall(marked, source, flags=re.DOTALL)
    assert len(blocks) == 2
    for old, new, block in blocks:
        assert (block.replace(new, old) if old else block) in target, block


@slow
def test_distilled_student_moves_towards_its_teachers_samples(tiny_dataset, tmp_path):
    import distill_ddpm
    import train_ddpm

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    # A near-random teacher: its 3-step samples differ clearly from its 1-step ones, so that the test can see the
    # student close the gap (a trained tiny teacher's samples hardly depend on the step count).
    train_ddpm.main(train_ddpm.parse_args(common_args(tiny_dataset, teacher_dir, 1, "--learning_rate", "1e-7")))
    teacher = HSRDiffusionPipeline.from_pretrained(teacher_dir)
    teacher.register_to_config(default_num_inference_steps=3)
    teacher.save_pretrained(teacher_dir)
    scene = np.load(sorted((tiny_dataset.parent / "cubes").glob("scene_*[0-9].npy"))[0])
    rgb = render_training_rgb(scene, DEFAULT_RESPONSE, WAVELENGTHS).astype(np.float32)
    gap_before = teacher_gap(teacher_dir, teacher_dir, rgb)  # the student starts as the teacher sampled in one step

    # A small learning rate: Adam's first steps move every weight by about the learning rate, which at 1e-3 first
    # throws a trained student off its teacher.
    args = distill_args(tiny_dataset, student_dir, teacher_dir, 10, "--learning_rate", "1e-4", "--sam_weight", "0.1")
    distill_ddpm.main(distill_ddpm.parse_args(args))
    assert teacher_gap(student_dir, teacher_dir, rgb) < 0.9 * gap_before
