"""Spectral reconstruction metrics as defined by the NTIRE challenges.

Every metric takes a prediction and a target in one of two layouts: numpy arrays are channel-last (`(H, W, C)` or
`(N, H, W, C)`), torch tensors are channel-first (`(N, C, H, W)`). Each metric is computed per image and the mean over
images is returned as a Python float, as the challenges average per-image scores. `crop=k` removes `k` pixels from every
border first (the ARAD_1K protocol uses 128).

No metric drops pixels silently: MRAE raises on zeros in the target unless `eps` is given, and SAM gives a defined angle
to zero spectra (see [`sam`]). NaN or Inf in either input raises a `ValueError`.
"""

import math

import numpy as np
import torch
from scipy.ndimage import gaussian_filter


def _as_images(x: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Converts either layout to a float64 `(N, H, W, C)` array."""
    if isinstance(x, torch.Tensor):
        if x.ndim != 4:
            raise ValueError(f"torch {name} must be (N, C, H, W), got shape {tuple(x.shape)}.")
        x = x.detach().to("cpu", torch.float64).permute(0, 2, 3, 1).numpy()
    else:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"numpy {name} must be (H, W, C) or (N, H, W, C), got shape {x.shape}.")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf values.")
    return x


def _pair(pred, target, crop: int) -> tuple[np.ndarray, np.ndarray]:
    pred, target = _as_images(pred, "pred"), _as_images(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"pred {pred.shape} and target {target.shape} must have the same shape.")
    if crop:
        if 2 * crop >= min(pred.shape[1:3]):
            raise ValueError(f"crop={crop} removes the whole {pred.shape[1]}x{pred.shape[2]} image.")
        pred, target = pred[:, crop:-crop, crop:-crop], target[:, crop:-crop, crop:-crop]
    return pred, target


def mrae(pred, target, crop: int = 0, eps: float = 0.0) -> float:
    """
    Mean relative absolute error, `mean(|pred - target| / target)`, the NTIRE ranking metric.

    The official definition has no epsilon, so a zero in the target makes the metric undefined: it raises a
    `ValueError` with the number of zero values unless `eps > 0` is given, in which case `target + eps` is the
    denominator everywhere.
    """
    pred, target = _pair(pred, target, crop)
    if eps == 0.0 and np.any(target == 0):
        raise ValueError(
            f"MRAE is undefined: the target has {int(np.sum(target == 0))} zero values. Pass eps>0 (for example one "
            "quantisation level of the data) to use target + eps as the denominator."
        )
    return float(np.mean(np.abs(pred - target) / (target + eps), axis=(1, 2, 3)).mean())


def rmse(pred, target, crop: int = 0) -> float:
    """Root mean squared error per image, averaged over images."""
    pred, target = _pair(pred, target, crop)
    return float(np.sqrt(np.mean((pred - target) ** 2, axis=(1, 2, 3))).mean())


def psnr(pred, target, crop: int = 0, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB per image (`peak` 1), averaged over images. Identical images give inf."""
    pred, target = _pair(pred, target, crop)
    mse = np.mean((pred - target) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(peak**2 / mse)))


def sam(pred, target, crop: int = 0) -> float:
    """
    Spectral angle mapper in radians: the mean over pixels of the angle between predicted and true spectra.

    A pixel where both spectra are zero has angle 0; where exactly one is zero, the angle is pi/2 (no direction can
    agree with a zero spectrum, and pi/2 is the largest angle between non-negative spectra). No pixel is skipped.
    """
    pred, target = _pair(pred, target, crop)
    dot = np.sum(pred * target, axis=-1)
    norms = np.linalg.norm(pred, axis=-1) * np.linalg.norm(target, axis=-1)
    pred_zero, target_zero = ~np.any(pred, axis=-1), ~np.any(target, axis=-1)
    cosine = np.divide(dot, norms, out=np.zeros_like(dot), where=norms > 0)
    angle = np.arccos(np.clip(cosine, -1.0, 1.0))
    angle = np.where(pred_zero & target_zero, 0.0, angle)
    return float(angle.mean(axis=(1, 2)).mean())


def sam_degrees(pred, target, crop: int = 0) -> float:
    """[`sam`] in degrees."""
    return math.degrees(sam(pred, target, crop))


def ssim(pred, target, crop: int = 0, data_range: float = 1.0) -> float:
    """
    Structural similarity (Wang et al. 2004) per band with an 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
    averaged over bands, pixels and images. Statistics use the unbiased covariance, as scikit-image does with
    `gaussian_weights=True`.
    """
    pred, target = _pair(pred, target, crop)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    sigma, truncate = 1.5, 3.5  # 3.5 sigma each side: an 11-pixel window.
    num_pixels = 11 * 11
    unbiased = num_pixels / (num_pixels - 1)
    scores = []
    for image_pred, image_target in zip(pred, target):
        for band in range(pred.shape[-1]):
            x, y = image_pred[..., band], image_target[..., band]

            def blur(z):
                return gaussian_filter(z, sigma=sigma, truncate=truncate, mode="reflect")

            mu_x, mu_y = blur(x), blur(y)
            var_x = unbiased * (blur(x * x) - mu_x**2)
            var_y = unbiased * (blur(y * y) - mu_y**2)
            cov = unbiased * (blur(x * y) - mu_x * mu_y)
            ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
            # Like scikit-image, ignore the half-window border where the filter reflects the image.
            pad = (11 - 1) // 2
            scores.append(ssim_map[pad:-pad, pad:-pad].mean())
    return float(np.mean(scores))


def backprojection_mrae(
    pred, rgb, response="cie1964_ntire2020", crop: int = 0, eps: float = 0.0, wavelengths=None
) -> float:
    """
    MRAE between the predicted cube rendered to linear RGB through `response` and the given RGB (NTIRE 2018's
    "back-projection" score): how well the cube explains the photo it came from.

    `rgb` is linear RGB in [0, 1] (or `uint8`, divided by 255) in the layout of `pred`, with 3 channels.
    """
    from hsr_diffusers.spectral import rendering_matrix

    pred_images = _as_images(pred, "pred")
    if isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8:
        rgb = rgb / 255.0
    rgb_images = _as_images(rgb, "rgb")
    rendered = pred_images @ rendering_matrix(response, wavelengths)
    return mrae(rendered, rgb_images, crop=crop, eps=eps)


METRICS = {"mrae": mrae, "rmse": rmse, "psnr": psnr, "sam": sam, "ssim": ssim}
