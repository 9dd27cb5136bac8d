"""Old home of the feed-forward pipeline: `HSRPixelGANPipeline` is now `HSRFeedForwardPipeline` (see
`hsr_diffusers.pipelines.hsr_feedforward`)."""

from hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan import HSRFeedForwardPipeline, deprecated_name


__all__ = ["HSRFeedForwardPipeline"]  # and `HSRPixelGANPipeline`, through `__getattr__`


def __getattr__(name: str):
    return deprecated_name(__name__, name)
