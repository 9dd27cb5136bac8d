from hsr_diffusers.pipelines.hsr_pixelgan.pipeline_hsr_pixelgan import HSRPixelGANPipeline


__all__ = ["HSRPixelGANPipeline"]
