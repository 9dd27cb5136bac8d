"""The training loop's bookkeeping shared by the training scripts, in the order of diffusers' `train_unconditional.py`:
accelerator set-up, resuming, the time budget, EMA and checkpoint hooks, the optimiser step, `TrainingProgress` (step
counts, progress bar, trackers, checkpoints, periodic validation), and the release with its model card.

Beside it: `script_checkpoints.py` (atomic `checkpoint-N` folders), `script_model_card.py` (the card and its facts),
`script_losses.py` (spectral loss terms).
"""

import logging
import math
import os
import time
from pathlib import Path

import script_model_card
import script_validation
import torch
from script_checkpoints import (
    CHECKPOINT_PATTERN,
    list_checkpoints,
    quiet_accelerate_logs,
    read_checkpoint_meta,
    save_checkpoint,
)
from tqdm.auto import tqdm


logger = logging.getLogger(__name__)


def make_accelerator(args):
    """The `Accelerator` of a training run (seedable sampler, so a resumed run sees the same batches), with logging,
    the seed and the output folder set up."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, args.logging_dir)
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO, handlers=[BarSafeHandler()]
    )
    set_seed(args.seed)
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
    return accelerator


class BarSafeHandler(logging.StreamHandler):
    """Writes log lines with `tqdm.write`, above the progress bar instead of into it (stderr, as `StreamHandler`)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


class Timer:
    """Wall time of a run, including the minutes of the runs it resumed from."""

    def __init__(self, previous_minutes: float = 0.0):
        self.start = time.perf_counter()
        self.previous = previous_minutes

    def minutes(self) -> float:
        return self.previous + (time.perf_counter() - self.start) / 60


def resolve_resume(args) -> tuple[Path | None, int, Timer]:
    """
    Where a run starts: the checkpoint to resume from, its global step (None, 0 when starting fresh) and the run's
    wall-time clock, started now and counting the minutes of the runs it resumes.
    """
    checkpoint = find_resume_checkpoint(args)
    if checkpoint is None:
        return None, 0, Timer()
    global_step = int(CHECKPOINT_PATTERN.match(checkpoint.name).group(1))
    return checkpoint, global_step, Timer(read_checkpoint_meta(checkpoint).get("wall_time_minutes", 0.0))


def find_resume_checkpoint(args) -> Path | None:
    """The `checkpoint-N` folder that `--resume_from_checkpoint` names (a folder or 'latest'), if any."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(args.output_dir)
        if not found:
            logger.info("No checkpoint found in the output directory: starting a new run.")
            return None
        path = found[-1]
    else:
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir() or not CHECKPOINT_PATTERN.match(path.name):
            raise FileNotFoundError(f"--resume_from_checkpoint {path} is not a checkpoint-N folder.")
    return path


class CheckpointedGenerator:
    """
    A `torch.Generator` for the training noise whose state is saved in every checkpoint (register it with
    `accelerator.register_for_checkpointing`). The global RNG is not enough: data loaders draw from it whenever an
    iterator starts, which a resumed run does at a different moment than an uninterrupted one.
    """

    def __init__(self, seed: int, device: torch.device):
        self.generator = torch.Generator(device).manual_seed(seed)

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def budget_spent(accelerator, timer: Timer, max_minutes: float | None) -> bool:
    """Whether the `--max_train_minutes` budget is spent, agreed by all processes (any rank over budget stops all)."""
    if max_minutes is None:
        return False
    over = torch.tensor(float(timer.minutes() >= max_minutes), device=accelerator.device)
    return bool(accelerator.reduce(over, reduction="sum").item() > 0)


def make_ema(args, model, accelerator):
    """`--use_ema`: an EMA of the trained model's weights (`diffusers.training_utils.EMAModel`), released instead of
    them; None without the flag."""
    from diffusers.training_utils import EMAModel

    if not args.use_ema:
        return None
    ema_model = EMAModel(model.parameters(), decay=args.ema_decay, model_cls=type(model), model_config=model.config)
    ema_model.to(accelerator.device)
    return ema_model


def register_checkpoint_hooks(accelerator, model_class, ema_model=None, discriminator_class=None) -> None:
    """
    accelerate save/load hooks: checkpoints hold diffusers-format folders besides the optimiser state, `unet/` for the
    trained model, `unet_ema/` for its EMA and `discriminator/` for a GAN's discriminator (chosen by type, as in
    diffusers' train_dreambooth.py).
    """
    from diffusers.training_utils import EMAModel

    def folder_and_class(model):
        if discriminator_class is not None and isinstance(model, discriminator_class):
            return "discriminator", discriminator_class
        return "unet", model_class

    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            if ema_model is not None:
                ema_model.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model.save_pretrained(os.path.join(output_dir, folder_and_class(model)[0]))
                weights.pop()

    def load_model_hook(models, input_dir):
        if ema_model is not None:
            loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), model_class)
            ema_model.load_state_dict(loaded.state_dict())
            ema_model.to(accelerator.device)
        for _ in range(len(models)):
            model = models.pop()
            folder, cls = folder_and_class(model)
            loaded = cls.from_pretrained(input_dir, subfolder=folder)
            model.register_to_config(**loaded.config)
            model.load_state_dict(loaded.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)


def optimizer_step(accelerator, loss, model, optimizer, lr_scheduler, max_grad_norm: float) -> None:
    """Backward pass and optimiser step, with the gradient norm clipped when the gradients are synced."""
    accelerator.backward(loss)
    if accelerator.sync_gradients:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    lr_scheduler.step()
    optimizer.zero_grad()


class TrainingProgress:
    """
    Where a run stands (global step, step budget, epochs) and the bookkeeping around each optimisation step that all
    training scripts share, in the order of diffusers' `train_unconditional.py`: LR schedule length, trackers,
    resuming, then after each step the EMA update, progress bar and trackers, `checkpoint-N` with the time budget, and
    periodic validation.

    The progress bar counts steps, or with `--max_train_minutes` the minutes of the budget (steps in its postfix): the
    step count of `--num_epochs` is only an upper bound then, and its ETA would be that of a run that never happens.

    Build it before `accelerator.prepare` (the step counts use the unsplit data loader), then call `start`.
    """

    def __init__(self, args, accelerator, train_dataloader, timer: Timer, checkpoint_meta: dict | None = None):
        self.args, self.accelerator, self.timer = args, accelerator, timer
        # Saved in each checkpoint besides the wall time, for a resumed run to read back.
        self.checkpoint_meta = checkpoint_meta or {}
        num_batches = len(train_dataloader) / accelerator.num_processes
        self.steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
        self.max_train_steps = args.max_train_steps or args.num_epochs * self.steps_per_epoch
        self.num_epochs = math.ceil(self.max_train_steps / self.steps_per_epoch)
        self.global_step, self.first_epoch, self.resume_batches = 0, 0, 0
        self.progress_bar = None

    @property
    def budget(self) -> str:
        """The run's budget in words, for the log: steps, and the time budget that ends the run first."""
        if self.args.max_train_minutes is None:
            return f"{self.max_train_steps} steps"
        return (
            f"at most {self.max_train_steps} steps: the {self.args.max_train_minutes:g} min budget ends the run at the "
            f"first checkpoint after it (every {self.args.checkpointing_steps} steps)"
        )

    @property
    def done(self) -> bool:
        return self.global_step >= self.max_train_steps

    def lr_scheduler(self, optimizer):
        """`--lr_scheduler` over the run's steps (counted on every process, as accelerate steps it on each)."""
        from diffusers.optimization import get_scheduler

        return get_scheduler(
            self.args.lr_scheduler,
            optimizer=optimizer,
            num_warmup_steps=self.args.lr_warmup_steps * self.accelerator.num_processes,
            num_training_steps=self.max_train_steps * self.accelerator.num_processes,
        )

    def start(self, tracker_name: str, checkpoint: Path | None, global_step: int) -> None:
        """
        Starts the trackers and, from a checkpoint, restores weights, optimiser, LR schedule and RNG states; the batches
        the run had seen are skipped by `epoch_batches`. Call after `accelerator.prepare`.
        """
        args, accelerator = self.args, self.accelerator
        if accelerator.is_main_process and args.report_to != "none":
            config = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool))}
            accelerator.init_trackers(tracker_name, config=config)
        if checkpoint is not None:
            accelerator.print(f"Resuming from {checkpoint}")
            with quiet_accelerate_logs():  # one line per restored part otherwise
                accelerator.load_state(str(checkpoint))
            self.global_step = global_step
            self.first_epoch = global_step // self.steps_per_epoch
            self.resume_batches = (global_step % self.steps_per_epoch) * args.gradient_accumulation_steps
            if budget_spent(accelerator, self.timer, args.max_train_minutes):
                self.max_train_steps = global_step  # resumed after the time budget was spent: release this checkpoint
        disable = not accelerator.is_local_main_process
        if args.max_train_minutes is None:
            self.progress_bar = tqdm(
                total=self.max_train_steps, initial=self.global_step, desc="Steps", disable=disable
            )
        else:
            minutes = args.max_train_minutes
            self.progress_bar = tqdm(
                total=minutes,
                initial=min(self.timer.minutes(), minutes),
                desc=f"Minutes of the {minutes:g} min budget",
                unit="min",
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:g} [{elapsed}<{remaining}{postfix}]",
                disable=disable,
            )

    def epochs(self):
        """The epochs left to train; none once the step budget is reached (a run resumed from its final checkpoint)."""
        for epoch in range(self.first_epoch, self.num_epochs):
            if self.done:
                return
            yield epoch

    def epoch_batches(self, epoch: int, train_dataset, train_dataloader):
        """The batches of an epoch: patches drawn for the epoch, and the ones already seen skipped after a resume."""
        train_dataset.set_epoch(epoch)
        train_dataloader.set_epoch(epoch)
        if epoch == self.first_epoch and self.resume_batches:
            return self.accelerator.skip_first_batches(train_dataloader, self.resume_batches)
        return train_dataloader

    def end_of_step(self, logs: dict, model, ema_model, validate) -> bool:
        """
        After an optimisation step (gradients synced): EMA update, step count, logs to the progress bar and trackers, a
        checkpoint every `--checkpointing_steps` (where the `--max_train_minutes` budget may end the run) and
        `validate()` every `--validation_steps` before the end. Returns whether the run is over.
        """
        args, accelerator = self.args, self.accelerator
        if ema_model is not None:
            ema_model.step(model.parameters())
        self.global_step += 1
        self.advance_progress_bar(logs)
        accelerator.log(logs, step=self.global_step)

        if self.global_step % args.checkpointing_steps == 0:
            minutes = self.timer.minutes()
            meta = {"wall_time_minutes": minutes, **self.checkpoint_meta}
            path = save_checkpoint(accelerator, args.output_dir, self.global_step, args.checkpoints_total_limit, meta)
            if accelerator.is_main_process:
                logger.info(f"step {self.global_step}: saved {path.name} after {minutes:.2f} min")
            if budget_spent(accelerator, self.timer, args.max_train_minutes):
                self.max_train_steps = self.global_step  # the time budget ends the run at this checkpoint
        if self.global_step % args.validation_steps == 0 and not self.done:
            values, grid = validate()
            script_validation.log_validation(accelerator, values, grid, self.global_step)
        return self.done

    def advance_progress_bar(self, logs: dict) -> None:
        """One step on the bar (a step bar), or the minutes so far (a time-budget bar), with the step and losses."""
        bar = self.progress_bar
        if self.args.max_train_minutes is None:
            bar.update(1)
            # Redrawn at every step, as tqdm's own `set_postfix` does: benchmarks/training_throughput.py times the steps
            # from the bar's lines.
            bar.set_postfix(logs)
        else:
            bar.set_postfix({"step": self.global_step, **logs}, refresh=False)
            bar.update(max(min(self.timer.minutes(), bar.total) - bar.n, 0.0))

    def final_validation(self, validate, train_split, validation_split, response: str) -> dict:
        """
        The end of the run always validates once more, for the model card. Returns the model-card facts that every
        training script states from its own run (`run_facts`), these metrics included.
        """
        self.accelerator.wait_for_everyone()
        self.progress_bar.close()
        values, grid = validate()
        script_validation.log_validation(self.accelerator, values, grid, self.global_step)
        args, accelerator, timer = self.args, self.accelerator, self.timer
        return script_model_card.run_facts(
            args, accelerator, timer, self.global_step, train_split, validation_split, values, response
        )


def released_model(accelerator, model, ema_model):
    """The network to release: the trained one, or with `--use_ema` a copy that holds the EMA weights."""
    model = accelerator.unwrap_model(model)
    if ema_model is not None:
        model = type(model).from_config(model.config)
        ema_model.copy_to(model.parameters())
    return model


def save_release(args, pipeline, facts: dict) -> None:
    """Saves the released pipeline in `--output_dir` with a model card of the run, and uploads it with `--push_to_hub`."""
    pipeline.save_pretrained(args.output_dir)
    logger.info(f"Saved the pipeline of step {facts.get('train_steps')} and its model card in {args.output_dir}")
    script_model_card.write_model_card(args.output_dir, facts, script_model_card.card_template(args.model_card))
    if args.push_to_hub:
        push_folder(args, args.output_dir)


def end_training(accelerator) -> None:
    """
    Waits for every process, frees the accelerator's references and ends the trackers. Drop the script's own references
    to the prepared objects first: a DDP wrapper (and its gloo reducer) must go while the process group still exists,
    as dropping it after `end_training` destroyed the group can hang the process at exit.
    """
    accelerator.wait_for_everyone()
    accelerator.free_memory()
    accelerator.end_training()


def push_folder(args, output_dir: str | Path) -> None:
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id or Path(output_dir).name, exist_ok=True, token=args.hub_token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=output_dir,
        ignore_patterns=["checkpoint-*", "logs/*", "prepared_dataset/*"],
        token=args.hub_token,
    )
