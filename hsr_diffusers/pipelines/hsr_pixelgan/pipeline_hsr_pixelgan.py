"""Old home of the feed-forward pipeline, kept because module paths are part of the checkpoint format (STYLE.md):
`HSRPixelGANPipeline` is now [`~hsr_diffusers.pipelines.hsr_feedforward.HSRFeedForwardPipeline`]."""

import warnings

from hsr_diffusers.pipelines.hsr_feedforward.pipeline_hsr_feedforward import HSRFeedForwardPipeline


__all__ = ["HSRFeedForwardPipeline"]  # and `HSRPixelGANPipeline`, through `__getattr__`

DEPRECATED_NAMES = {"HSRPixelGANPipeline": HSRFeedForwardPipeline}


def deprecated_name(module: str, name: str):
    """The class an old name stands for, with a `FutureWarning` (the module-level `__getattr__` of the modules that
    exported the old name)."""
    if name not in DEPRECATED_NAMES:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    new = DEPRECATED_NAMES[name]
    warnings.warn(
        f"{name} is deprecated and will be removed in a future release; use {new.__name__}, the same class "
        f"(`from hsr_diffusers import {new.__name__}`).",
        FutureWarning,
        stacklevel=3,
    )
    return new


def __getattr__(name: str):
    return deprecated_name(__name__, name)
