from hsr_diffusers.pipelines.auto_pipeline import HSRPipeline, list_pretrained
from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion import HSRDiffusionPipeline
from hsr_diffusers.pipelines.hsr_feedforward.pipeline_hsr_feedforward import HSRFeedForwardPipeline
from hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan import deprecated_name
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput


__all__ = ["HSRDiffusionPipeline", "HSRFeedForwardPipeline", "HSRPipeline", "HSRPipelineOutput", "list_pretrained"]


def __getattr__(name: str):
    # `HSRPixelGANPipeline`, the old name of `HSRFeedForwardPipeline`, still imports, with a FutureWarning.
    return deprecated_name(__name__, name)
