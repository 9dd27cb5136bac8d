from hsr_diffusers.pipelines.hsr_diffusion.pipeline_hsr_diffusion import HSRDiffusionPipeline


__all__ = ["HSRDiffusionPipeline"]
