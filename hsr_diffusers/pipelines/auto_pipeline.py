import os
from collections import OrderedDict
from importlib import resources
from pathlib import Path

from diffusers import DiffusionPipeline

from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion import HSRDiffusionPipeline
from hsr_diffusers.pipelines.hsr_feedforward.pipeline_hsr_feedforward import HSRFeedForwardPipeline


# `_class_name` in `model_index.json` -> pipeline class. `HSRPixelGANPipeline` is the old name of the feed-forward
# pipeline, which checkpoints saved before the rename (the bundled `pixelgan-cave` among them) carry.
HSR_PIPELINES = OrderedDict(
    [
        ("HSRDiffusionPipeline", HSRDiffusionPipeline),
        ("HSRFeedForwardPipeline", HSRFeedForwardPipeline),
        ("HSRPixelGANPipeline", HSRFeedForwardPipeline),
    ]
)

# Short names of the models that ship inside the package, resolved offline to `hsr_diffusers/pretrained/<name>`.
BUNDLED_PREFIX = "hsr-diffusers/"


def _bundled_root() -> Path:
    return Path(str(resources.files("hsr_diffusers").joinpath("pretrained")))


def list_pretrained() -> list[str]:
    """Names of the pretrained pipelines bundled with the package, loadable offline with `HSRPipeline.from_pretrained`."""
    root = _bundled_root()
    if not root.is_dir():
        return []
    return sorted(BUNDLED_PREFIX + p.name for p in root.iterdir() if (p / "model_index.json").is_file())


def resolve_pretrained(name_or_path: str | Path) -> str:
    """Maps a bundled short name (`"hsr-diffusers/ddpm-cave"`) to its folder; anything else is returned unchanged."""
    name = str(name_or_path)
    if name.startswith(BUNDLED_PREFIX) and not Path(name).exists():
        folder = _bundled_root() / name[len(BUNDLED_PREFIX) :]
        if (folder / "model_index.json").is_file():
            return str(folder)
    return name


def looks_like_path(name_or_path: str | os.PathLike) -> bool:
    """
    Whether a model name is meant as a local folder rather than a Hub id (`org/name`): a path object, or a string that
    starts with `./`, `../`, `/` or `~`, ends with a separator, or has more separators than the one of `org/name`.
    """
    if isinstance(name_or_path, os.PathLike):
        return True
    name = str(name_or_path)
    separators = tuple({"/", os.sep, os.altsep or "/"})
    return (
        name in (".", "..", "~")
        or name.startswith(("./", "../", "/", "~", ".\\", "..\\"))
        or name.endswith(separators)
        or name.count("/") > 1
        or (os.sep != "/" and os.sep in name)
    )


def check_model_source(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> None:
    """
    Fails fast, with the cause in the message, where loading would otherwise reach the Hub for nothing: a path that is
    not a folder, and a Hub id while `HF_HUB_OFFLINE` is set that is not in the local cache.

    Raises:
        `FileNotFoundError`: the path is not an existing folder, or the Hub id cannot be loaded offline.
    """
    from huggingface_hub import is_offline_mode, try_to_load_from_cache

    name = str(name_or_path)
    if Path(name).expanduser().is_dir():
        return
    bundled = ", ".join(list_pretrained()) or "none installed"
    if looks_like_path(name_or_path):
        target = Path(name).expanduser()
        what = "is a file, not a folder" if target.exists() else "no such folder"
        raise FileNotFoundError(
            f"{name}: {what}. A model is a folder written by save_pretrained (with model_index.json), a bundled name "
            f"({bundled}) or a Hub id (org/name)."
        )
    if is_offline_mode():
        cached = try_to_load_from_cache(name, "model_index.json", cache_dir=cache_dir)
        if not isinstance(cached, str):
            raise FileNotFoundError(
                f"{name}: not a local folder or a bundled model ({bundled}), and the Hub cannot be asked because "
                "HF_HUB_OFFLINE is set (the model is not in the local Hugging Face cache). Unset HF_HUB_OFFLINE to "
                "download it, or pass a folder."
            )


class HSRPipeline:
    r"""
    The one entry point: [`HSRPipeline.from_pretrained`] reads `_class_name` from `model_index.json` and returns the
    matching pipeline ([`HSRDiffusionPipeline`] or [`HSRFeedForwardPipeline`]).

    `DiffusionPipeline.from_pretrained` cannot do this itself, because it looks `_class_name` up in the diffusers
    package only. This class is not instantiable.
    """

    def __init__(self, *args, **kwargs):
        raise EnvironmentError(f"{self.__class__.__name__} is a loader: use `HSRPipeline.from_pretrained(...)`.")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> DiffusionPipeline:
        r"""
        Loads a saved HSR pipeline of any kind.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`):
                A bundled name from [`list_pretrained`] (`"hsr-diffusers/ddpm-cave"`, loaded offline from the package),
                a local folder written by `save_pretrained`, or a Hub repo id (downloaded through huggingface_hub as in
                diffusers).
            kwargs:
                Passed to the pipeline's `from_pretrained` (`dtype`, `revision`, `cache_dir`, ...). Weights are read
                from safetensors only.

        Returns:
            [`HSRDiffusionPipeline`] or [`HSRFeedForwardPipeline`].

        Raises:
            `FileNotFoundError`: a path that is not a folder, or a Hub id that is not cached while `HF_HUB_OFFLINE` is
                set; the message names the cause.
        """
        path = resolve_pretrained(pretrained_model_name_or_path)
        if path == str(pretrained_model_name_or_path):  # not a bundled model
            check_model_source(pretrained_model_name_or_path, kwargs.get("cache_dir"))
        config_kwargs = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
        config = DiffusionPipeline.load_config(path, **config_kwargs)
        class_name = config.get("_class_name")
        if class_name not in HSR_PIPELINES:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {class_name!r} pipeline; HSRPipeline loads "
                f"{', '.join(HSR_PIPELINES)}."
            )
        # Never unpickle: safetensors only, and no remote code.
        kwargs.setdefault("use_safetensors", True)
        kwargs.pop("trust_remote_code", None)
        return HSR_PIPELINES[class_name].from_pretrained(path, **kwargs)
