import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hsr_diffusers import HSRDiffusionPipeline
from hsr_diffusers.spectral import DEFAULT_RESPONSE, WAVELENGTHS

from .test_train_scripts import common_args


def teacher_gap(student_dir, teacher_dir, rgb):
    """RMSE between the student's one-step sample and the teacher's default sample from the same initial noise."""
    cubes = []
    for folder, steps in ((student_dir, 1), (teacher_dir, None)):
        pipe = HSRDiffusionPipeline.from_pretrained(folder)
        pipe.set_progress_bar_config(disable=True)
        cubes.append(pipe(rgb, num_inference_steps=steps, generator=torch.Generator().manual_seed(0)).cubes)
    return float(np.sqrt(np.mean((cubes[0] - cubes[1]) ** 2)))


def test_distilled_student_keeps_teacher_parts_and_moves_towards_its_samples(tiny_dataset, tmp_path):
    import train_ddpm
    import train_utils

    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    # A near-random teacher: its 3-step samples differ clearly from its 1-step ones, so that the test can see the
    # student close the gap (a trained tiny teacher's samples hardly depend on the step count).
    train_ddpm.main(train_ddpm.parse_args(common_args(tiny_dataset, teacher_dir, 1, "--learning_rate", "1e-7")))
    teacher = HSRDiffusionPipeline.from_pretrained(teacher_dir)
    teacher.register_to_config(default_num_inference_steps=3)
    teacher.save_pretrained(teacher_dir)
    scene = np.load(sorted((tiny_dataset.parent / "cubes").glob("scene_*[0-9].npy"))[0])
    rgb = train_utils.scene_rgb(scene, DEFAULT_RESPONSE, WAVELENGTHS, "ntire2020_clean").astype(np.float32)
    gap_before = teacher_gap(teacher_dir, teacher_dir, rgb)  # the student starts as the teacher sampled in one step

    # A small learning rate: Adam's first steps move every weight by about the learning rate, which at 1e-3 first
    # throws a trained student off its teacher.
    args = common_args(
        tiny_dataset,
        student_dir,
        10,
        "--distill_from",
        str(teacher_dir),
        "--learning_rate",
        "1e-4",
        "--sam_weight",
        "0.1",
    )
    train_ddpm.main(train_ddpm.parse_args([*args, "--validation_inference_steps", "1"]))

    student = HSRDiffusionPipeline.from_pretrained(student_dir)
    assert student.config.default_num_inference_steps == 1
    assert student.config.default_tile_size == teacher.config.default_tile_size
    assert student.config.residual_scale == teacher.config.residual_scale
    assert student.scheduler.config.prediction_type == teacher.scheduler.config.prediction_type
    for name, value in teacher.estimator.state_dict().items():
        assert torch.equal(student.estimator.state_dict()[name], value)
    student_weights = load_file(student_dir / "unet" / "diffusion_pytorch_model.safetensors")
    teacher_weights = load_file(teacher_dir / "unet" / "diffusion_pytorch_model.safetensors")
    assert student_weights.keys() == teacher_weights.keys()
    assert any(not torch.equal(student_weights[k], teacher_weights[k]) for k in teacher_weights)
    assert teacher_gap(student_dir, teacher_dir, rgb) < 0.9 * gap_before


def test_distillation_refuses_an_epsilon_teacher(tiny_dataset, tmp_path):
    import train_ddpm

    teacher_dir = tmp_path / "teacher"
    train_ddpm.main(train_ddpm.parse_args(common_args(tiny_dataset, teacher_dir, 1, "--prediction_type", "epsilon")))
    args = train_ddpm.parse_args(
        common_args(tiny_dataset, tmp_path / "student", 1, "--distill_from", str(teacher_dir))
    )
    with pytest.raises(ValueError, match="epsilon"):
        train_ddpm.main(args)
