"""`checkpoint-N` folders of the training scripts, written atomically: a crash while saving never leaves a folder that
`--resume_from_checkpoint latest` would pick. Each holds accelerate's state (optimisers, LR schedules, RNG states, the
models through the hooks of `script_training.register_checkpoint_hooks`) and `train_meta.json` (wall time so far, ...).
"""

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path


logger = logging.getLogger(__name__)

# `checkpoint-<global step>`; a folder being written is `checkpoint-<step>.tmp` and never matches.
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
# Written into each checkpoint beside accelerate's state: values a resumed run needs (wall time so far, ...).
CHECKPOINT_META_FILE = "train_meta.json"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    r"""
    The complete `checkpoint-N` folders of a run, sorted by step (half-written `checkpoint-N.tmp` folders never match).

    Args:
        output_dir (`str` or `os.PathLike`):
            The run's output folder; a missing folder has no checkpoints.

    Returns:
        `list[Path]`: oldest first, so `list_checkpoints(run)[-1]` is the latest.
    """
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if path.is_dir() and CHECKPOINT_PATTERN.match(path.name)]
    return sorted(found, key=lambda path: int(CHECKPOINT_PATTERN.match(path.name).group(1)))


def read_checkpoint_meta(checkpoint: str | os.PathLike | None) -> dict:
    r"""
    The values saved beside a checkpoint's state by [`save_checkpoint`] (`{}` for None or a checkpoint without them).
    """
    if checkpoint is None or not (Path(checkpoint) / CHECKPOINT_META_FILE).is_file():
        return {}
    return json.loads((Path(checkpoint) / CHECKPOINT_META_FILE).read_text())


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    total_limit: int | None = None,
    meta: dict | None = None,
) -> Path:
    r"""
    Saves the full training state (`accelerator.save_state`) to `output_dir/checkpoint-<step>`, atomically.

    The state is written to `checkpoint-<step>.tmp` and renamed when complete, so a crash while saving never leaves a
    folder that [`list_checkpoints`] returns. Older checkpoints beyond `total_limit` are removed only after the new one
    is complete. Every process must call it (accelerate saves per-process RNG states). accelerate's own lines (one per
    file it writes) are kept out of the console; the caller logs the checkpoint in one line.

    Args:
        accelerator (`accelerate.Accelerator`):
            The run's accelerator, with its save hooks registered.
        output_dir (`str` or `os.PathLike`):
            The run's output folder.
        step (`int`):
            The global step, which names the folder.
        total_limit (`int`, *optional*):
            Checkpoints to keep, this one included; all when None.
        meta (`dict`, *optional*):
            JSON values saved with the state, read back with [`read_checkpoint_meta`].

    Returns:
        `Path`: the `checkpoint-<step>` folder.
    """
    final = Path(output_dir) / f"checkpoint-{step}"
    partial = Path(output_dir) / f"checkpoint-{step}.tmp"
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    with quiet_accelerate_logs():
        accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (partial / CHECKPOINT_META_FILE).write_text(json.dumps(meta or {}))
        if final.exists():
            shutil.rmtree(final)
        os.replace(partial, final)
        if total_limit is not None:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


@contextlib.contextmanager
def quiet_accelerate_logs():
    """accelerate's loggers at WARNING inside the block: `save_state` logs one INFO line per file it writes."""
    accelerate_logger = logging.getLogger("accelerate")
    level = accelerate_logger.level
    accelerate_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        accelerate_logger.setLevel(level)
