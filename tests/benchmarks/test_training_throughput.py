"""`benchmarks/training_throughput.py`: its step timing and memory polling on a real process tree, and a tiny run."""

import sys
import textwrap

# benchmarks/ is on the test path (pyproject.toml), as it is on a benchmark's own when it runs.
import common
import pytest
import training_throughput

from hsr_diffusers.data import make_synthetic_dataset

from ..testing_utils import slow


# A worker that holds 96 MiB of anonymous memory and reports 6 tqdm steps: the first one 0.3 s, the others 0.03 s.
# It holds the memory about 0.75 s in all: the parent polls memory every `POLL_SECONDS` (0.2 s).
WORKER = textwrap.dedent(
    """
    import time
    import numpy as np
    from tqdm import tqdm

    block = np.ones(96 * 2**20 // 8)
    bar = tqdm(total=6, desc="Steps")
    for step in range(6):
        time.sleep(0.3 if step == 0 else 0.03)
        bar.update(1)
        bar.set_postfix(loss=0.5)
    time.sleep(0.3)
    """
)
# A launcher that holds 256 MiB itself: it must not be counted, as accelerate's launcher is not.
LAUNCHER = (
    "import subprocess, sys; import numpy as np; ballast = np.ones(256 * 2**20 // 8); "
    f"sys.exit(subprocess.call([sys.executable, '-c', {WORKER!r}]))"
)


def test_measure_times_steps_after_warmup_and_sums_descendants_memory():
    result = training_throughput.measure([sys.executable, "-c", LAUNCHER], None, 1, 6, timeout=60)
    assert result["returncode"] == 0 and not result["timed_out"]
    # Steps 2..6 sleep 5 x 0.03 s; with the 0.3 s warm-up step counted it would be 0.45 s.
    assert 0.135 <= result["seconds"] < 0.35
    assert 0 < result["startup_seconds"] < 30  # launch to the bar's 0/6
    # The worker's 96 MiB plus its interpreter, numpy and tqdm (< 100 MiB), without the launcher's 256 MiB.
    assert 96 <= result["peak_anon_mib"] < 196
    assert result["peak_rss_mib"] >= result["peak_pss_mib"] >= result["peak_anon_mib"]


def test_measure_reports_a_failed_run():
    result = training_throughput.measure([sys.executable, "-c", "raise SystemExit(3)"], None, 1, 2, timeout=60)
    assert result["returncode"] == 3 and result["seconds"] is None and result["startup_seconds"] is None


@slow
def test_tiny_benchmark_has_a_number_for_every_configuration(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path / "results")  # not the repository's benchmarks/results
    data = make_synthetic_dataset(tmp_path / "data", num_train=2, num_validation=1, height=32, width=32)
    records = training_throughput.main(
        ["--data", str(data), "--preset", "tiny", "--steps", "3", "--warmup_steps", "1", "--batch_size", "2"]
        + ["--output", "_smoke"]
    )
    table = (tmp_path / "results" / "_smoke.md").read_text()
    configurations = {
        (script, loader, layout)
        for script in training_throughput.SCRIPTS
        for loader in training_throughput.LOADERS
        for layout in training_throughput.LAYOUTS
    }
    assert {(r["script"], r["loader"], r["layout"]) for r in records} == configurations
    for record in records:
        assert record["error"] is None, record
        expected = 3 * 2 * record["processes"] / (3 * record["seconds_per_step"])
        assert record["patches_per_second"] == pytest.approx(expected)
    lines = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ")]
    header, rows = [cell.strip() for cell in lines[0]], lines[1:]
    assert len(rows) == len(configurations)
    for row in rows:
        assert float(row[header.index("patches/s")]) > 0
        assert row[header.index("note")].strip() == ""
