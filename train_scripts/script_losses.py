"""Spectral loss terms of the training scripts (`--sam_weight`, `--mrae_weight`) on predicted `[N, bands, H, W]` cubes.

The metrics that score a released pipeline are `hsr_diffusers.metrics` (NumPy, per image); these are their
differentiable, batched counterparts for training.
"""

import torch


def sam_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""
    Mean spectral angle in radians between `[N, bands, H, W]` cubes.

    The cosine is clamped away from ±1 because the gradient of `arccos` is infinite there (identical spectra).
    """
    cosine = torch.nn.functional.cosine_similarity(pred, target, dim=1, eps=1e-6)
    return torch.arccos(cosine.clamp(-1 + 1e-6, 1 - 1e-6)).mean()


def mrae_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    r"""
    Mean relative absolute error `|pred - target| / (|target| + eps)`; `eps` keeps the exact zeros of CAVE finite.
    """
    return ((pred - target).abs() / (target.abs() + eps)).mean()


def spectral_loss(
    pred: torch.Tensor, target: torch.Tensor, sam_weight: float = 0.0, mrae_weight: float = 0.0
) -> torch.Tensor:
    r"""
    The weighted sum `sam_weight * sam_loss + mrae_weight * mrae_loss` (a zero weight skips its term).

    Args:
        pred (`torch.Tensor` of shape `[N, bands, H, W]`):
            Predicted cube in [0, 1].
        target (`torch.Tensor` of shape `[N, bands, H, W]`):
            True cube in [0, 1].
        sam_weight (`float`, *optional*, defaults to 0.0):
            Weight of [`sam_loss`].
        mrae_weight (`float`, *optional*, defaults to 0.0):
            Weight of [`mrae_loss`].

    Returns:
        `torch.Tensor`: a scalar (zero when both weights are zero).
    """
    loss = pred.new_zeros(())
    if sam_weight:
        loss = loss + sam_weight * sam_loss(pred, target)
    if mrae_weight:
        loss = loss + mrae_weight * mrae_loss(pred, target)
    return loss
