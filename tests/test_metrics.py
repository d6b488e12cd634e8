"""Metrics: known values, an independent SSIM, and the published bicubic rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from acla import degradations, metrics
from acla.data import open_set

# Published bicubic rows (Y channel, border = scale), the targets of issue #3.
PUBLISHED_BICUBIC = {
    ("Set5", 2): (33.66, 0.9299), ("Set5", 3): (30.39, 0.8682), ("Set5", 4): (28.42, 0.8104),
    ("Set14", 2): (30.24, 0.8688), ("Set14", 3): (27.55, 0.7742), ("Set14", 4): (26.00, 0.7027),
}


def test_psnr_of_a_known_error() -> None:
    target = np.full((20, 20), 100, dtype=np.uint8)
    output = target.copy()
    output[:10] += 10  # MSE = 50
    assert metrics.psnr(output, target) == pytest.approx(10 * np.log10(255**2 / 50), abs=1e-12)
    assert metrics.psnr(target, target) == float("inf")


def test_crop_border_ignores_the_border() -> None:
    target = np.full((20, 20, 3), 100, dtype=np.uint8)
    output = target.copy()
    output[:2] = 0
    assert metrics.psnr(output, target, crop_border=2) == float("inf")
    assert metrics.psnr(output, target, crop_border=1) < 30


def test_y_channel_is_bt601_luma() -> None:
    white = np.full((4, 4, 3), 255, dtype=np.uint8)
    black = np.zeros((4, 4, 3), dtype=np.uint8)
    assert metrics.rgb_to_y(white)[0, 0] == pytest.approx(235.0)
    assert metrics.rgb_to_y(black)[0, 0] == pytest.approx(16.0)
    # Luma ignores a colour shift that keeps Y: swapping R/B changes Y, so PSNR on Y is finite.
    image = np.random.default_rng(1).integers(0, 256, (16, 16, 3)).astype(np.uint8)
    assert np.isfinite(metrics.psnr(image[..., ::-1].copy(), image, on_y_channel=True))


def test_ssim_matches_scikit_image_gaussian_valid_region() -> None:
    rng = np.random.default_rng(0)
    target = rng.integers(0, 256, (64, 80, 3)).astype(np.uint8)
    output = np.clip(target + rng.normal(0, 20, target.shape), 0, 255).astype(np.uint8)
    reference = structural_similarity(
        output.astype(np.float64), target.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255, channel_axis=2,
    )
    assert metrics.ssim(output, target) == pytest.approx(reference, abs=1e-10)
    assert metrics.ssim(target, target) == pytest.approx(1.0, abs=1e-12)


def test_metrics_refuse_float_and_mismatched_images() -> None:
    image = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        metrics.psnr(image.astype(np.float32), image)
    with pytest.raises(ValueError, match="differs from target shape"):
        metrics.ssim(image[:15], image)
    with pytest.raises(ValueError, match="unknown task"):
        metrics.score("deblur", image, image)


def test_conventions_are_the_tasks() -> None:
    assert metrics.convention("sr") == metrics.Convention(on_y_channel=True, crop_by_scale=True)
    assert metrics.convention("jpeg") == metrics.Convention(on_y_channel=True, crop_by_scale=False)
    for task in ("denoise", "demosaic"):
        assert metrics.convention(task) == metrics.Convention(on_y_channel=False, crop_by_scale=False)


@pytest.mark.parametrize("set_name", ["Set5", "Set14"])
def test_published_bicubic_rows_are_reproduced(data_root: Path, set_name: str) -> None:
    image_set = open_set(set_name, data_root)
    for scale in (2, 3, 4):
        scores = []
        for name, image in image_set:
            # Gray images (Set14's bridge) stay gray and are scored on gray, as in MATLAB.
            hr = degradations.modcrop(image, scale)
            output = degradations.bicubic_upscale(degradations.bicubic_downscale(hr, scale), scale)
            scores.append(metrics.score("sr", output, hr, scale=scale))
        psnr, ssim = np.mean(scores, axis=0)
        published_psnr, published_ssim = PUBLISHED_BICUBIC[(set_name, scale)]
        assert abs(psnr - published_psnr) <= 0.02, f"{set_name} x{scale}: PSNR {psnr:.4f} vs {published_psnr}"
        assert abs(ssim - published_ssim) <= 0.002, f"{set_name} x{scale}: SSIM {ssim:.5f} vs {published_ssim}"
