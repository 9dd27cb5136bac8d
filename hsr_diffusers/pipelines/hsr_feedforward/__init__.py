from hsr_diffusers.pipelines.hsr_feedforward.pipeline_hsr_feedforward import HSRFeedForwardPipeline


__all__ = ["HSRFeedForwardPipeline"]
