"""Training throughput (patches per second) and peak memory of both training scripts on CPU: streaming vs in-memory
data, and 1 vs 2 processes.

    python benchmarks/training_throughput.py --data runs/cave

Each script (`train_ddpm.py`, `train_pixelgan.py`) at `--preset` runs with the streaming loader (patches read from the
memory-mapped Arrow files) and with `--in_memory` (every cube loaded into RAM up front), each in three layouts written
processes x threads per process: 1x1, 1x2 (one process, OMP_NUM_THREADS=2) and 2x1 (two processes, OMP_NUM_THREADS=1
each), so that the table shows what a second core gives either as intra-op threads or as a data-parallel process.
Every configuration is a fresh `accelerate launch` into a temporary output folder that is deleted afterwards, with
checkpoints, validation and trackers switched off.

How the layouts are launched. On CPU, `accelerate launch --cpu --num_processes 2` without an MPI host file starts ONE
process (accelerate 1.15 `simple_launcher`; its `Accelerator` reports `num_processes == 1`). Two real ranks need the
torchrun path, `accelerate launch --multi_gpu --num_processes 2`, with `ACCELERATE_USE_CPU=true` in the environment
(without it each worker is a separate 1-process run). accelerate also overwrites OMP_NUM_THREADS with
`--num_cpu_threads_per_process`, so both are set. The number of processes is checked after each run against the
"N process(es)" that the script writes into its model card; a mismatch is reported instead of a number.

Timing (what "patches/s" means). The scripts refresh a tqdm bar ("Steps: ... k/total") after every optimiser step, and
tqdm flushes each refresh. The benchmark reads the launcher's merged stdout/stderr through a pipe and records when the
line for step k first arrives. A run has `--warmup_steps` W + `--steps` N steps; the time is `t(W + N) - t(W)`, so
imports, dataset loading (including the whole `--in_memory` load), the root-polynomial fit, the first W steps (lazy
allocations, first reads) and the final save are excluded, while everything inside the loop is included: data
loading, forward, backward, optimiser, gradient all-reduce with 2 processes, and epoch boundaries. Patches/s =
N x train_batch_size x num_processes / seconds: the batch size is per process, so 2 processes train twice the global
batch per step (weak scaling, as a data-parallel run does). "start-up s" is the time from launch to the bar's 0/total.

Memory. Every 0.2 s the benchmark sums three numbers over all descendants of the `accelerate launch` process (the
training processes, not the launcher itself), read from `/proc/<pid>/smaps_rollup`, and the table shows the peak of each
sum over the whole run (start-up included, since that is where `--in_memory` loads):
- RSS: resident pages. The sum over-counts pages that processes share: libraries, the pages of the memory-mapped
  dataset that both ranks read, and the copy-on-write pages of a child forked for a moment (e.g. `uname -p` run by
  `platform.processor()`; a poll that lands on one nearly doubles the sum).
- PSS: RSS with each shared page divided among the processes that map it, so the sum is the physical memory of the tree.
  It still includes touched pages of the dataset file, which the kernel can drop.
- anon: the anonymous part of PSS (`Pss_Anon`): heap, tensors, the `--in_memory` cubes; what the run needs in RAM.
A child of the launcher that still has the launcher's command line is a fork that has not exec'd yet (its pages are
the launcher's) and is skipped. Without smaps_rollup (not Linux, kernel < 5.9) PSS falls back to RSS and anon to
`rss - shared` from psutil. Polling can miss a spike shorter than 0.2 s.
"""

import argparse
import codecs
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
from common import markdown_table, write_result


REPO_ROOT = Path(__file__).resolve().parents[1]
TRAIN_SCRIPTS = REPO_ROOT / "train_scripts"
SCRIPTS = {"ddpm": "train_ddpm.py", "pixelgan": "train_pixelgan.py"}
LOADERS = ["stream", "in_memory"]
LAYOUTS = ["1x1", "1x2", "2x1"]  # processes x threads per process
# tqdm's default bar: "Steps:  40%|████      | 12/30 [00:05<00:07, 2.3it/s, loss=0.1]"
STEP_PATTERN = re.compile(r"Steps:\s*\d+%\|[^|\r\n]*\|\s*(\d+)/\d+")
POLL_SECONDS = 0.2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="A prepared dataset folder (`hsr data prepare`).")
    parser.add_argument("--scripts", nargs="+", default=list(SCRIPTS), choices=list(SCRIPTS))
    parser.add_argument("--preset", default="small", help="`--model_config` of the scripts (tiny, small, base).")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="Per-process batch size (default: the preset's, else 4)."
    )
    parser.add_argument("--steps", type=int, default=30, help="Timed steps, after the warm-up.")
    parser.add_argument("--warmup_steps", type=int, default=5, help="Steps run before the timed ones.")
    parser.add_argument("--loaders", nargs="+", default=LOADERS, choices=LOADERS)
    parser.add_argument("--layouts", nargs="+", default=LAYOUTS, choices=LAYOUTS, help="processes x threads.")
    parser.add_argument("--timeout", type=int, default=1800, help="Seconds before a run is killed.")
    parser.add_argument("--output", default="training_throughput", help="Name of the file in benchmarks/results/.")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup_steps < 1:
        parser.error("--steps and --warmup_steps must be at least 1.")
    return args


def preset_training(family: str, preset: str) -> dict:
    """The preset's "training" section (flag defaults), found as the scripts find it."""
    path = TRAIN_SCRIPTS / "configs" / f"{family}_{preset}.json"
    path = path if path.is_file() else Path(preset)
    return json.loads(path.read_text()).get("training", {})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(script: Path, processes: int, threads: int, script_args: list[str]) -> list[str]:
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1"]
    launcher += ["--mixed_precision", "no", "--dynamo_backend", "no", "--num_cpu_threads_per_process", str(threads)]
    if processes == 1:
        launcher += ["--cpu", "--num_processes", "1"]
    else:
        # torchrun path; ACCELERATE_USE_CPU=true in the environment makes it a gloo group of CPU ranks (docstring).
        launcher += ["--multi_gpu", "--num_processes", str(processes), "--main_process_port", str(free_port())]
    return [*launcher, str(script), *script_args]


def is_unexeced_fork(child: psutil.Process, parent: psutil.Process) -> bool:
    """Whether `child` is still the image of `parent` (forked, not yet exec'd): its memory is the parent's, shared."""
    try:
        return child.cmdline() == parent.cmdline()
    except psutil.Error:
        return True  # gone, or not readable: nothing to count


def memory(process: psutil.Process) -> tuple[int, int, int]:
    """RSS, PSS and anonymous PSS of one process in bytes; zeros when it has gone."""
    try:
        text = Path(f"/proc/{process.pid}/smaps_rollup").read_text()
        kib = {name: int(value) for name, value in re.findall(r"^(\w+):\s+(\d+) kB", text, flags=re.MULTILINE)}
        return kib["Rss"] * 1024, kib["Pss"] * 1024, kib.get("Pss_Anon", kib.get("Anonymous", 0)) * 1024
    except (OSError, KeyError):
        pass
    try:
        info = process.memory_info()
    except psutil.Error:
        return 0, 0, 0
    return info.rss, info.rss, info.rss - getattr(info, "shared", 0)


def _read_output(stream, arrivals: dict[int, float], chunks: list[str]) -> None:
    """Records when each tqdm step line first arrives; keeps the text for error messages."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    tail = ""
    while chunk := os.read(stream.fileno(), 65536):
        now = time.perf_counter()
        text = decoder.decode(chunk)
        chunks.append(text)
        # The tail carries a line that was split across two reads; `setdefault` keeps the first arrival.
        for match in STEP_PATTERN.finditer(tail + text):
            arrivals.setdefault(int(match.group(1)), now)
        tail = (tail + text)[-512:]


def measure(command: list[str], env: dict | None, first_step: int, last_step: int, timeout: float) -> dict:
    """
    Runs `command` and returns the seconds between the arrivals of tqdm steps `first_step` and `last_step`, the start-up
    seconds (launch to step 0), the peak summed RSS, PSS and anonymous PSS (MiB) of the command's descendants, the
    return code and the output. `seconds` is None when a step line never arrived.
    """
    start = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    arrivals, chunks = {}, []
    reader = threading.Thread(target=_read_output, args=(process.stdout, arrivals, chunks), daemon=True)
    reader.start()
    launcher = psutil.Process(process.pid)
    peaks = [0, 0, 0]  # RSS, PSS, anonymous PSS in bytes
    timed_out = False
    try:
        while process.poll() is None:
            if time.perf_counter() - start > timeout:
                timed_out = True
                break
            try:
                children = launcher.children(recursive=True)
            except psutil.NoSuchProcess:
                children = []
            totals = [0, 0, 0]
            for child in children:
                if is_unexeced_fork(child, launcher):  # a copy of its parent for an instant, not a worker
                    continue
                for i, value in enumerate(memory(child)):
                    totals[i] += value
            peaks = [max(peak, total) for peak, total in zip(peaks, totals)]
            time.sleep(POLL_SECONDS)
    finally:
        if process.poll() is None:  # timed out or interrupted: stop the session started above, workers included
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    reader.join(timeout=10)
    process.stdout.close()
    seconds = None
    if first_step in arrivals and last_step in arrivals:
        seconds = arrivals[last_step] - arrivals[first_step]
    return {
        "seconds": seconds,
        "startup_seconds": arrivals[0] - start if 0 in arrivals else None,
        "peak_rss_mib": peaks[0] / 2**20,
        "peak_pss_mib": peaks[1] / 2**20,
        "peak_anon_mib": peaks[2] / 2**20,
        "returncode": process.returncode,
        "timed_out": timed_out,
        "output": "".join(chunks),
    }


def run_configuration(args, family: str, loader: str, processes: int, threads: int, batch_size: int) -> dict:
    """One training run in a temporary output folder; returns the measurement and an error message or None."""
    output_dir = tempfile.mkdtemp(prefix=f"hsr-train-bench-{family}-")
    total_steps = args.warmup_steps + args.steps
    never = str(total_steps + 1)  # no checkpoint or validation inside the run
    script_args = [
        "--train_data_dir", str(args.data),
        "--output_dir", output_dir,
        "--model_config", args.preset,
        "--max_train_steps", str(total_steps),
        "--train_batch_size", str(batch_size),
        "--report_to", "none",
        "--checkpointing_steps", never,
        "--validation_steps", never,
        "--max_validation_scenes", "0",
    ]  # fmt: skip
    if loader == "in_memory":
        script_args.append("--in_memory")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env.pop("TQDM_DISABLE", None)  # the timing reads the bar
    if processes > 1:
        env["ACCELERATE_USE_CPU"] = "true"
    command = launch_command(TRAIN_SCRIPTS / SCRIPTS[family], processes, threads, script_args)
    try:
        result = measure(command, env, args.warmup_steps, total_steps, args.timeout)
        facts = Path(output_dir, "train_meta.json")  # the run's facts, written beside its model card
        launched = json.loads(facts.read_text()).get("num_processes") if facts.is_file() else None
    finally:
        shutil.rmtree(output_dir, ignore_errors=True)
    error = None
    if result["timed_out"]:
        error = f"timeout after {args.timeout} s"
    elif result["returncode"] != 0:
        lines = [line for line in re.split(r"[\r\n]+", result["output"]) if line.strip()]
        error = "failed: " + (lines[-1][:100] if lines else f"exit code {result['returncode']}")
    elif result["seconds"] is None:
        error = "no tqdm step lines in the output"
    elif launched != processes:
        found = "an unknown number of" if launched is None else launched
        error = f"ran {found} process(es), expected {processes}"
    return {**result, "error": error}


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    records = []
    for family in args.scripts:
        training = preset_training(family, args.preset)
        batch_size = args.batch_size or training.get("train_batch_size", 4)
        resolution = training.get("resolution", 64)
        for loader in args.loaders:
            for layout in args.layouts:
                processes, threads = (int(n) for n in layout.split("x"))
                result = run_configuration(args, family, loader, processes, threads, batch_size)
                record = {
                    "script": family,
                    "loader": loader,
                    "layout": layout,
                    "processes": processes,
                    "patch": f"{resolution}x{resolution}",
                    "global_batch": batch_size * processes,
                    "error": result["error"],
                    "startup_seconds": result["startup_seconds"],
                    "peak_rss_mib": result["peak_rss_mib"],
                    "peak_pss_mib": result["peak_pss_mib"],
                    "peak_anon_mib": result["peak_anon_mib"],
                    "seconds_per_step": None,
                    "patches_per_second": None,
                }
                if result["error"] is None:
                    record["seconds_per_step"] = result["seconds"] / args.steps
                    record["patches_per_second"] = args.steps * batch_size * processes / result["seconds"]
                records.append(record)
                print({k: v for k, v in record.items() if v is not None}, flush=True)

    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = []
    for record in records:
        reference = next(
            r
            for r in records
            if (r["script"], r["loader"], r["layout"]) == (record["script"], record["loader"], args.layouts[0])
        )
        speedup = None
        if record["patches_per_second"] and reference["patches_per_second"]:
            speedup = record["patches_per_second"] / reference["patches_per_second"]
        rows.append(
            [
                record["script"],
                record["loader"],
                record["layout"],
                record["patch"],
                record["global_batch"],
                number(record["seconds_per_step"], 3),
                number(record["patches_per_second"], 2),
                number(speedup, 2),
                number(record["startup_seconds"], 1),
                number(record["peak_rss_mib"], 0),
                number(record["peak_pss_mib"], 0),
                number(record["peak_anon_mib"], 0),
                (record["error"] or "").replace("|", "/"),  # a log line must not split the table row
            ]
        )
    header = [
        "script",
        "data",
        "processes x threads",
        "patch",
        "global batch",
        "s/step",
        "patches/s",
        f"x {args.layouts[0]}",
        "start-up s",
        "peak RSS (MiB)",
        "peak PSS (MiB)",
        "peak anon (MiB)",
        "note",
    ]
    body = (
        f"Preset `{args.preset}`, {args.warmup_steps} warm-up + {args.steps} timed steps per run, data `{args.data}`. "
        f"`x {args.layouts[0]}`: patches/s relative to the same script and loader in that layout. How the times "
        "and the memory are measured: the docstring of `benchmarks/training_throughput.py`.\n\n"
        + markdown_table(header, rows)
        + "\n"
    )
    write_result(args.output, "Training throughput and peak memory", body)
    return records


if __name__ == "__main__":
    main()
