import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from hsr_diffusers import HSRDiffusionPipeline, HSRPipeline, HSRPixelGANPipeline

from .conftest import TRAIN_SCRIPTS


REPO_ROOT = TRAIN_SCRIPTS.parent


def common_args(dataset, output_dir, steps=2, *extra):
    return [
        "--train_data_dir", str(dataset),
        "--output_dir", str(output_dir),
        "--model_config", "tiny",
        "--max_train_steps", str(steps),
        "--patches_per_scene", "4",
        "--train_batch_size", "2",
        "--checkpointing_steps", "1",
        "--checkpoints_total_limit", "1",
        "--validation_steps", "100",
        "--validation_tile_size", "32",
        "--report_to", "none",
        *extra,
    ]  # fmt: skip


def run_script(name, args, timeout=240):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(TRAIN_SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def test_train_ddpm_two_steps_saves_loadable_pipeline(tiny_dataset, tmp_path):
    import train_ddpm

    train_ddpm.main(
        train_ddpm.parse_args(
            common_args(
                tiny_dataset,
                tmp_path,
                2,
                "--use_ema",
                "--sam_weight",
                "0.1",
                "--validation_inference_steps",
                "2",
                "--model_card",
                "hsr-diffusion-cave.md",
            )
        )
    )
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "scheduler" / "scheduler_config.json").is_file()
    assert (tmp_path / "estimator" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (tmp_path / "checkpoint-2" / "unet_ema").is_dir()
    card = (tmp_path / "README.md").read_text()
    assert "train_ddpm.py" in card and "RMSE" in card and "pipeline_tag: image-to-image" in card
    assert "{" + "train_steps}" not in card and "batch 2, 2 steps" in card  # the template was filled in
    pipe = HSRPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe, HSRDiffusionPipeline) and pipe.estimator is not None
    pipe.set_progress_bar_config(disable=True)
    cubes = pipe(np.full((16, 16, 3), 0.3, np.float32), num_inference_steps=2).cubes
    assert cubes.shape == (1, 16, 16, 31) and np.isfinite(cubes).all()


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


def test_train_pixelgan_two_steps_saves_generator_and_discriminator(tiny_dataset, tmp_path):
    import train_pixelgan

    train_pixelgan.main(
        train_pixelgan.parse_args(
            common_args(tiny_dataset, tmp_path, 2, "--discriminator", "patch", "--mrae_weight", "0.1")
        )
    )
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (tmp_path / "discriminator" / "diffusion_pytorch_model.safetensors").is_file()
    assert {p.name for p in (tmp_path / "checkpoint-2").iterdir()} >= {"unet", "discriminator"}
    pipe = HSRPipeline.from_pretrained(tmp_path)
    assert isinstance(pipe, HSRPixelGANPipeline)
    assert "discriminator" not in pipe.components  # the pipeline never registers D
    assert (
        pipe.config.default_tile_size == 4 * train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path)).resolution
    )


def test_train_pixelgan_as_regressor_has_no_discriminator_loss(tiny_dataset, tmp_path):
    import train_pixelgan

    train_pixelgan.main(
        train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 1, "--gan_weight", "0", "--residual", "none"))
    )
    assert HSRPipeline.from_pretrained(tmp_path).estimator is None


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


def test_band_mismatch_and_empty_dataset_stop_before_training(tiny_dataset, tmp_path):
    import train_ddpm

    config = tmp_path / "bands.json"
    config.write_text('{"unet": {"out_channels": 16, "block_out_channels": [8, 16], "norm_num_groups": 4, '
                      '"down_block_types": ["DownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "UpBlock2D"]}}')  # fmt: skip
    args = common_args(tiny_dataset, tmp_path / "out", 1)
    args[args.index("--model_config") + 1] = str(config)
    with pytest.raises(ValueError, match="16 but the data has 31 bands"):
        train_ddpm.main(train_ddpm.parse_args(args))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception, match="(?i)no .*found|empty"):
        train_ddpm.main(train_ddpm.parse_args(common_args(empty, tmp_path / "out2", 1)))
    with pytest.raises(ValueError, match="exactly one"):
        train_ddpm.parse_args(["--output_dir", str(tmp_path)])


def test_time_budget_stops_at_the_first_checkpoint_after_it(tiny_dataset, tmp_path):
    import train_pixelgan

    extra = ["--max_train_minutes", "0", "--checkpointing_steps", "2", "--checkpoints_total_limit", "3"]
    train_pixelgan.main(train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 10, *extra)))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    assert "- **train_steps**: 2" in (tmp_path / "README.md").read_text()
    released = load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors")

    # Resuming a run whose budget is spent trains nothing more and releases the same weights.
    resume = ["--resume_from_checkpoint", "latest"]
    train_pixelgan.main(train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 10, *extra, *resume)))
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-2"]
    for name, tensor in load_file(tmp_path / "unet" / "diffusion_pytorch_model.safetensors").items():
        torch.testing.assert_close(tensor, released[name], atol=0, rtol=0)
    with pytest.raises(ValueError, match="max_train_minutes"):
        train_pixelgan.parse_args(common_args(tiny_dataset, tmp_path, 1, "--max_train_minutes", "-1"))


def test_half_written_checkpoint_is_never_resumed(tiny_dataset, tmp_path):
    import train_utils

    (tmp_path / "checkpoint-7.tmp").mkdir(parents=True)
    (tmp_path / "checkpoint-3").mkdir()
    args = train_utils.argparse.Namespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    path, step = train_utils.resolve_resume(args)
    assert path.name == "checkpoint-3" and step == 3


def unet_weights(folder):
    return load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")


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
    assert isinstance(HSRPipeline.from_pretrained(tmp_path), HSRPixelGANPipeline)
