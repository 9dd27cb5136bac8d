from hsr_diffusers.pipelines.auto_pipeline import HSRPipeline, list_pretrained
from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion import HSRDiffusionPipeline
from hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan import HSRPixelGANPipeline
from hsr_diffusers.pipelines.pipeline_output import HSRPipelineOutput


__all__ = ["HSRDiffusionPipeline", "HSRPipeline", "HSRPipelineOutput", "HSRPixelGANPipeline", "list_pretrained"]
