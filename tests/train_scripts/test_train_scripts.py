"""`train_ddpm.py` and `train_pixelgan.py`: one fast end-to-end run each, fine-tuning, data formats, flags and cards.

The fast runs call `main(parse_args([...]))` in-process with the `tiny` presets, 32-px synthetic scenes and 1-2 steps;
subprocess runs (kill and resume, two accelerate processes) and the other formulations are `@slow`.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from hsr_diffusers import HSRDiffusionPipeline, HSRFeedForwardPipeline, HSRPipeline
from hsr_diffusers.spectral import DEFAULT_RESPONSE

from ..testing_utils import slow
from .conftest import TRAIN_SCRIPTS, common_args


REPO_ROOT = TRAIN_SCRIPTS.parent
TEMPLATE_CLAIMS = ["preset `small`", "10 training scenes", "SAM loss term 0.1", "SAM loss weight 10"]


def run_script(name, args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def unet_weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


def assert_card_states_the_run(card: str) -> None:
    """Every placeholder filled, and none of the settings the template's author trained with."""
    assert not re.search(r"\{\w+\}", card), re.findall(r"\{\w+\}", card)
    for claim in TEMPLATE_CLAIMS:
        assert claim not in card


# ---------------------------------------------------------------------------------------------------- end to end
def test_train_ddpm_two_steps_saves_loadable_pipeline(tiny_dataset, tmp_path, caplog):
    import train_ddpm

    extra = ["--use_ema", "--ema_decay", "0.9", "--sam_weight", "0.1", "--validation_inference_steps", "2"]
    with caplog.at_level("INFO"):
        train_ddpm.main(
            train_ddpm.parse_args(
                common_args(tiny_dataset, tmp_path, 2, *extra, "--model_card", "hsr-diffusion-cave.md")
            )
        )
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    assert (tmp_path / "estimator" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (tmp_path / "checkpoint-2" / "unet_ema").is_dir()
    # The end-of-run validation reaches the console: the scene it is on, then the metrics.
    assert "validation scene scene_003 (32x32, 1 tiles of 32 px)" in caplog.text
    assert re.search(r"step 2: val/mrae=[\d.]+, val/rmse=[\d.]+", caplog.text)

    facts = json.loads((tmp_path / "train_meta.json").read_text())  # the run's facts, for scripts
    assert facts["train_steps"] == 2 and facts["num_processes"] == 1
    card = (tmp_path / "README.md").read_text()
    assert (
        "train_ddpm.py" in card and "| MRAE | RMSE | PSNR | SAM |" in card and "pipeline_tag: image-to-image" in card
    )
    assert_card_states_the_run(card)
    for fact in [
        "preset `tiny`",
        "3 training scenes",
        "(scene_000, scene_001, scene_002)",
        "validation\n  scenes: scene_003",
        "batch 2, 2 steps",
        "EMA of the weights (decay 0.9)",
        "SAM weight 0.1",
        "prediction type `sample`",
        "2 DDIMScheduler steps",
        "trained from random initialisation",
        'mode="ntire2020_clean")` for every patch',
    ]:
        assert fact in card, fact
    pipe = HSRPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe, HSRDiffusionPipeline) and pipe.estimator is not None
    pipe.set_progress_bar_config(disable=True)
    cubes = pipe(np.full((16, 16, 3), 0.3, np.float32), num_inference_steps=2).cubes
    assert cubes.shape == (1, 16, 16, 31) and np.isfinite(cubes).all()


def test_train_pixelgan_on_a_raw_cave_download_stops_at_its_time_budget(raw_cave_folder, tmp_path, caplog, capsys):
    import script_data
    import train_pixelgan

    # A budget of 0 minutes: the run stops at the first checkpoint (step 2 of 10) and releases it.
    out = tmp_path / "run"
    extra = ["--discriminator", "patch", "--mrae_weight", "0.1", "--max_train_minutes", "0"]
    extra += ["--checkpointing_steps", "2", "--checkpoints_total_limit", "3", "--model_card", "hsr-pixelgan-cave.md"]
    with caplog.at_level("INFO"):
        train_pixelgan.main(train_pixelgan.parse_args(common_args(raw_cave_folder, out, 10, *extra)))

    # The raw folder was prepared on the fly with the built-in CAVE split's validation scenes, outside the model folder.
    prepared = script_data.default_prepared_dir(raw_cave_folder, DEFAULT_RESPONSE)
    assert (prepared / "dataset_dict.json").is_file()
    assert f"Preparing {raw_cave_folder} (cave format) into {prepared}" in caplog.text
    assert not list(out.rglob("*.arrow")) and not (out / "prepared_dataset").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    # One log line per checkpoint (accelerate's line per file it saves stays out) and the budget stated up front.
    assert "step 2: saved checkpoint-2 after" in caplog.text and "Saving current state" not in caplog.text
    assert "at most 10 steps: the 0 min budget ends the run at the first checkpoint after it" in caplog.text
    # The bar counts the budget's minutes, not the 10 planned steps.
    bar = capsys.readouterr().err
    assert "Minutes of the 0 min budget" in bar and "/10 [" not in bar
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (out / "discriminator" / "diffusion_pytorch_model.safetensors").is_file()
    assert {p.name for p in (out / "checkpoint-2").iterdir()} >= {"unet", "discriminator"}
    pipe = HSRPipeline.from_pretrained(out)
    assert isinstance(pipe, HSRFeedForwardPipeline)
    assert "discriminator" not in pipe.components  # the pipeline never registers D
    assert pipe.config.default_tile_size == 4 * 32  # four tiny-preset patches

    card = (out / "README.md").read_text()
    assert_card_states_the_run(card)
    for fact in [
        "2 training scenes (balloons, beads) from `",
        "(2 training scenes, split auto); no relighting",
        "scenes: feathers",
        "batch 2, 2 steps",
        "generator `pix2pix`, `HSRPixelGANGenerator` preset `tiny` (num_downs 3, ngf 8, norm_type instance)",
        "discriminator `patch` (ndf 8)",
        "L1 weight 100, vanilla GAN loss weight 1",
        "MRAE weight 0.1",
        "no EMA",
    ]:
        assert fact in card, fact
    assert "EMA of the" not in card and "SAM weight" not in card
    # The Hub metadata names the source (the raw CAVE folder, by its format's name) and its scene count.
    assert ModelCard.load(out / "README.md").data.datasets == ["CAVE multispectral image database (2 training scenes)"]

    # Resumed with its budget spent, the run finds the prepared data again and releases the same checkpoint.
    caplog.clear()
    resume = ["--resume_from_checkpoint", "latest"]
    with caplog.at_level("INFO"):
        train_pixelgan.main(train_pixelgan.parse_args(common_args(raw_cave_folder, out, 10, *extra, *resume)))
    assert f"Using {prepared}, prepared earlier from {raw_cave_folder}" in caplog.text
    assert "Preparing" not in caplog.text and "Loading states" not in caplog.text
    assert "batch 2, 2 steps" in (out / "README.md").read_text()


def test_raw_data_is_prepared_by_content_and_never_in_the_output_folder(raw_cave_folder, tmp_path, datasets_cache):
    import script_data

    response = DEFAULT_RESPONSE
    raw = tmp_path / "raw"
    (raw / "scene").mkdir(parents=True)
    (raw / "scene" / "a.npy").write_bytes(b"1")
    first = script_data.default_prepared_dir(raw, response)
    assert first.parent == datasets_cache / "hsr_diffusers_prepared" and first.name.startswith("raw-")
    assert script_data.default_prepared_dir(str(raw), response) == first  # a resumed run finds it
    assert script_data.default_prepared_dir(raw, "another_camera") != first  # another response renders other RGB
    (raw / "scene" / "b.npy").write_bytes(b"2")
    assert script_data.default_prepared_dir(raw, response) != first  # changed data: prepared again

    args = argparse.Namespace(prepared_data_dir=None, output_dir=str(tmp_path / "out"), train_data_dir=str(raw))
    assert script_data.prepared_dir(args, response) == script_data.default_prepared_dir(raw, response)
    (tmp_path / "out" / "prepared_dataset").mkdir(parents=True)  # a run started before the data left output_dir
    assert script_data.prepared_dir(args, response) == tmp_path / "out" / "prepared_dataset"
    args.prepared_data_dir = str(tmp_path / "mine")
    assert script_data.prepared_dir(args, response) == tmp_path / "mine"

    # An interrupted preparation (a `.tmp` folder) is redone, and only a complete dataset gets the final name.
    target = tmp_path / "prepared"
    (tmp_path / "prepared.tmp").mkdir()
    assert script_data.prepare_data_dir(raw_cave_folder, target, response) == target
    assert (target / "dataset_dict.json").is_file() and not (tmp_path / "prepared.tmp").exists()


# ---------------------------------------------------------------------------------------------------- fine-tuning
@pytest.mark.parametrize("script", ["train_ddpm", "train_pixelgan"])
def test_fine_tune_a_released_pipeline_on_photo_rgb(
    script, tiny_dataset, tiny_ddpm_release, tiny_pixelgan_release, tmp_path
):
    module = __import__(script)
    given = tiny_ddpm_release if script == "train_ddpm" else tiny_pixelgan_release
    extra = ["--pretrained_model_name_or_path", str(given), "--rgb_degradation", "photo", "--learning_rate", "1e-9"]
    # No --model_card: the card without a template lists the facts of the run.
    module.main(module.parse_args(common_args(tiny_dataset, tmp_path, 1, *extra)))

    before, after = HSRPipeline.from_pretrained(given), HSRPipeline.from_pretrained(tmp_path)
    assert type(after) is type(before)
    # The run started from the given weights (one step at lr 1e-9 hardly moves them) and kept its estimator.
    for name, value in before.unet.state_dict().items():
        torch.testing.assert_close(after.unet.state_dict()[name], value, atol=1e-6, rtol=0)
    for name, value in before.estimator.state_dict().items():
        assert torch.equal(after.estimator.state_dict()[name], value)
    if script == "train_ddpm":  # the release's schedule and sampling defaults carry over
        for key in ("residual_scale", "default_num_inference_steps", "default_tile_size", "default_tile_overlap"):
            assert after.config[key] == before.config[key], key
        assert after.scheduler.config.prediction_type == "sample"
    card = (tmp_path / "README.md").read_text()
    assert f"fine-tuned from the released pipeline `{given}`" in card
    assert "photo degradations drawn per patch (`--rgb_degradation photo`)" in card


# ---------------------------------------------------------------------------------------------------- flags
@pytest.mark.parametrize("script", ["train_ddpm", "train_pixelgan", "train_regression", "distill_ddpm"])
def test_help_shows_defaults(script, capsys):
    module = __import__(script)
    with pytest.raises(SystemExit):
        module.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: " in text and "--train_data_dir" in text


def test_train_ddpm_has_no_distillation_flags(tiny_dataset, tmp_path, capsys):
    import train_ddpm

    with pytest.raises(SystemExit):
        train_ddpm.parse_args(common_args(tiny_dataset, tmp_path, 1, "--distill_from", str(tmp_path)))
    assert "unrecognized arguments: --distill_from" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--resolution", "0"], "resolution"),
        (["--learning_rate", "-1"], "learning_rate"),
        (["--resolution", "12"], "multiple"),
    ],
)
def test_bad_flags_stop_before_training(tiny_dataset, tmp_path, extra, message):
    import train_pixelgan

    with pytest.raises(ValueError, match=message):
        train_pixelgan.main(train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 1, *extra)))
    assert not list(tmp_path.glob("checkpoint-*"))
    with pytest.raises(ValueError, match="max_train_minutes"):
        train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 1, "--max_train_minutes", "-1"))


def test_band_mismatch_and_data_without_scenes_stop_before_training(tiny_dataset, tmp_path):
    import train_ddpm

    config = tmp_path / "bands.json"
    config.write_text('{"unet": {"out_channels": 16, "block_out_channels": [8, 16], "norm_num_groups": 4, '
                      '"down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}}')  # fmt: skip
    args = common_args(tiny_dataset, tmp_path / "out", 1)
    args[args.index("--model_config") + 1] = str(config)
    with pytest.raises(ValueError, match="16 but the data has 31 bands"):
        train_ddpm.main(train_ddpm.parse_args(args))
    empty = tmp_path / "empty"
    (empty / "notes").mkdir(parents=True)
    with pytest.raises(Exception, match="no cube files .* and no CAVE scene folders"):
        train_ddpm.main(train_ddpm.parse_args(common_args(empty, tmp_path / "out2", 1)))
    with pytest.raises(ValueError, match="exactly one"):
        train_ddpm.parse_args(["--output_dir", str(tmp_path)])


def test_half_written_checkpoint_is_never_resumed(tmp_path):
    import script_training

    (tmp_path / "checkpoint-7.tmp").mkdir(parents=True)
    (tmp_path / "checkpoint-3").mkdir()
    args = argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    path, step, timer = script_training.resolve_resume(args)
    assert path.name == "checkpoint-3" and step == 3 and timer.previous == 0.0  # no meta: no earlier minutes


# ---------------------------------------------------------------------------------------------------- slow
@slow
@pytest.mark.parametrize(
    "extra",
    [
        ["--prediction_type", "epsilon", "--residual", "none"],
        ["--prediction_type", "v_prediction", "--snr_gamma", "5", "--loss", "l1"],
    ],
)
def test_train_ddpm_other_formulations(tiny_dataset, tmp_path, extra):
    import train_ddpm

    train_ddpm.main(train_ddpm.parse_args(common_args(tiny_dataset, tmp_path, 1, *extra)))
    pipe = HSRPipeline.from_pretrained(tmp_path)
    assert pipe.scheduler.config.prediction_type == extra[1]
    assert (pipe.estimator is None) == ("none" in extra)


@slow
def test_train_pixelgan_as_regressor_has_no_discriminator_loss(tiny_dataset, tmp_path):
    import train_pixelgan

    train_pixelgan.main(
        train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 1, "--gan_weight", "0", "--residual", "none"))
    )
    assert HSRPipeline.from_pretrained(tmp_path).estimator is None
    assert "- **discriminator**: none (gan_weight 0)" in (tmp_path / "README.md").read_text()


@slow
def test_resuming_a_spent_time_budget_releases_the_same_weights(tiny_dataset, tmp_path):
    import train_pixelgan

    extra = ["--max_train_minutes", "0", "--checkpointing_steps", "2", "--checkpoints_total_limit", "3"]
    train_pixelgan.main(train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 10, *extra)))
    released = unet_weights(tmp_path)
    resume = ["--resume_from_checkpoint", "latest"]
    train_pixelgan.main(train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 10, *extra, *resume)))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    for name, tensor in unet_weights(tmp_path).items():
        torch.testing.assert_close(tensor, released[name], atol=0, rtol=0)


@slow
def test_killed_run_resumes_to_the_same_result(tiny_dataset, tmp_path):
    steps = 8
    extra = ["--checkpoints_total_limit", "2", "--patches_per_scene", "2"]
    reference = run_script("train_ddpm.py", common_args(tiny_dataset, tmp_path / "reference", steps, *extra))
    assert reference.returncode == 0, reference.stderr[-2000:]

    # Start the same run and kill it hard as soon as a checkpoint is complete.
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, str(TRAIN_SCRIPTS / "train_ddpm.py"), *common_args(tiny_dataset, out, steps, *extra)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not list(out.glob("checkpoint-[0-9]")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (out / "model_index.json").exists(), "the run finished before it could be killed"

    resumed = run_script(
        "train_ddpm.py", common_args(tiny_dataset, out, steps, *extra, "--resume_from_checkpoint", "latest")
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming from" in resumed.stdout + resumed.stderr
    assert f"- **train_steps**: {steps}" in (out / "README.md").read_text()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == sorted(
        p.name for p in (tmp_path / "reference").glob("checkpoint-*")
    )
    expected, actual = unet_weights(tmp_path / "reference"), unet_weights(out)
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], atol=1e-5, rtol=1e-4)


@slow
def test_accelerate_launch_two_cpu_processes(tiny_dataset, tmp_path):
    # `accelerate launch --cpu --num_processes 2` starts a single process in accelerate 1.x; two CPU ranks need the
    # multi-process launcher with the CPU forced through the environment.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "ACCELERATE_USE_CPU": "true"}
    with socket.socket() as probe:  # a free port: the default 29500 may be held by another run on this machine
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--main_process_port", str(port),
        "--num_machines", "1", "--num_cpu_threads_per_process", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", str(TRAIN_SCRIPTS / "train_pixelgan.py"),
        *common_args(tiny_dataset, tmp_path, 2, "--validation_steps", "1", "--max_validation_scenes", "2"),
    ]  # fmt: skip
    # Own session, so that a hung rank can be killed with its launcher instead of outliving the test.
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = process.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        log, _ = process.communicate()
        pytest.fail("the two-process run did not finish within 240 s:\n" + log[-3000:])
    assert process.returncode == 0, log[-3000:]
    assert "step 1: val/mrae" in log  # metrics gathered over both processes
    assert "2 process(es)" in (tmp_path / "README.md").read_text()  # a second rank really ran
    assert (tmp_path / "model_index.json").is_file()
    assert isinstance(HSRPipeline.from_pretrained(tmp_path), HSRFeedForwardPipeline)
