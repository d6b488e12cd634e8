"""Degradations: bit-exact with the MATLAB-made references, and clear errors on bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from acla import degradations
from acla.images import read_image

SET5 = ("baby", "bird", "butterfly", "head", "woman")
CLASSIC5 = ("baboon", "barbara", "boats", "lena", "peppers")


def max_abs_difference(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", SET5)
def test_bicubic_lr_is_bit_exact_with_matlab(data_root: Path, reference_root: Path, name: str, scale: int) -> None:
    folder = reference_root / "sr_bicubic" / "Set5" / f"x{scale}"
    original = read_image(data_root / "Set5" / f"{name}.png")
    assert np.array_equal(degradations.modcrop(original, scale), read_image(folder / f"{name}_HR_x{scale}.png"))
    ours = degradations.bicubic_downscale(original, scale)
    assert max_abs_difference(ours, read_image(folder / f"{name}_LRBI_x{scale}.png")) == 0


def test_bayer_mosaic_is_bit_exact_with_matlab(data_root: Path, reference_root: Path) -> None:
    folder = reference_root / "demosaic" / "Kodak24" / "N1"
    clean = read_image(data_root / "Kodak24" / "kodim01.png")
    assert np.array_equal(clean, read_image(folder / "kodim01_HQ_N1.png"))
    assert max_abs_difference(degradations.bayer_mosaic(clean, "GRBG"), read_image(folder / "kodim01_LQ_N1.png")) == 0


@pytest.mark.parametrize("name", CLASSIC5)
def test_jpeg_q10_is_bit_exact_with_matlab(data_root: Path, reference_root: Path, name: str) -> None:
    folder = reference_root / "jpeg" / "Classic5" / "Q10"
    clean = read_image(data_root / "Classic5" / f"{name}.png")
    assert np.array_equal(clean, read_image(folder / f"{name}_HQ_Q10.png"))
    assert max_abs_difference(degradations.jpeg(clean, 10), read_image(folder / f"{name}_LQ_Q10.png")) == 0


def test_imresize_keeps_a_constant_image_constant() -> None:
    image = np.full((13, 17, 3), 77, dtype=np.uint8)
    for scale in (0.5, 1 / 3, 0.25, 2, 3):
        resized = degradations.imresize(image, scale)
        assert resized.shape[:2] == (degradations._output_length(13, scale), degradations._output_length(17, scale))
        assert (resized == 77).all()


def test_imresize_output_sizes_follow_matlab_ceil() -> None:
    image = np.zeros((255, 229), dtype=np.uint8)
    assert degradations.imresize(image, 1 / 3).shape == (85, 77)  # ceil(255/3) = 85, ceil(229/3) = 77
    assert degradations.imresize(image, 1 / 2).shape == (128, 115)


def _keys_cubic(x: float) -> float:
    x = abs(x)
    return (1.5 * x**3 - 2.5 * x**2 + 1) if x <= 1 else (-0.5 * x**3 + 2.5 * x**2 - 4 * x + 2) if x <= 2 else 0.0


def test_imresize_replicates_edges_instead_of_mirroring() -> None:
    # Width 8 -> 4: the last output pixel sits at u = 7.5 (1-based) with taps 3..12 of the antialiased
    # kernel. Replicating the edge gives every tap past column 8 the last column's value; mirroring
    # would give taps 9..12 the values of columns 8..5.
    image = np.zeros((8, 8), dtype=np.uint8)
    image[:, -1] = 255
    taps = np.arange(3, 13)
    weights = np.array([0.5 * _keys_cubic(0.5 * (7.5 - tap)) for tap in taps])
    weights /= weights.sum()
    replicated = degradations.to_uint8(255 * weights[taps >= 8].sum())
    mirrored = degradations.to_uint8(255 * weights[(taps == 8) | (taps == 9)].sum())
    assert replicated != mirrored
    assert (degradations.imresize(image, 0.5)[:, -1] == replicated).all()


def test_modcrop_keeps_the_top_left_multiple() -> None:
    image = np.arange(7 * 10).reshape(7, 10).astype(np.uint8)
    assert degradations.modcrop(image, 3).shape == (6, 9)
    assert np.array_equal(degradations.modcrop(image, 3), image[:6, :9])


@pytest.mark.parametrize("scale", [1, 5, 8, 2.5])
def test_sr_scale_outside_2_3_4_is_refused(scale: float) -> None:
    with pytest.raises(ValueError, match="SR scale must be one of"):
        degradations.bicubic_downscale(np.zeros((24, 24, 3), dtype=np.uint8), scale)


def test_gaussian_noise_is_deterministic_per_seed_and_has_the_right_sigma() -> None:
    image = np.full((200, 200, 3), 128, dtype=np.uint8)
    seed = degradations.image_seed(0, "Kodak24", "kodim01", "denoise_color_s25")
    first = degradations.add_gaussian_noise(image, 25, np.random.default_rng(seed))
    second = degradations.add_gaussian_noise(image, 25, np.random.default_rng(seed))
    other = degradations.add_gaussian_noise(image, 25, np.random.default_rng(seed + 1))
    assert np.array_equal(first, second) and not np.array_equal(first, other)
    assert first.dtype == np.float64  # real-valued, not clipped: values below 0 and above 255 exist
    assert abs((first - 128).std() - 25) < 0.3
    assert degradations.image_seed("a", "b") != degradations.image_seed("b", "a")


def test_negative_sigma_is_refused() -> None:
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        degradations.add_gaussian_noise(np.zeros((4, 4), np.uint8), -1, np.random.default_rng(0))


@pytest.mark.parametrize("pattern", degradations.BAYER_PATTERNS)
def test_bayer_masks_sample_one_colour_per_pixel(pattern: str) -> None:
    masks = degradations.bayer_masks(4, 6, pattern)
    assert (masks.sum(axis=2) == 1).all()
    assert masks[..., 1].sum() == 12  # half the pixels are green
    top_left = "RGB"[int(np.argmax(masks[0, 0]))]
    assert top_left == pattern[0]


def test_bayer_mosaic_refuses_gray_images_and_unknown_patterns() -> None:
    with pytest.raises(ValueError, match="needs an RGB"):
        degradations.bayer_mosaic(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="Bayer pattern must be one of"):
        degradations.bayer_mosaic(np.zeros((8, 8, 3), np.uint8), "RGBG")


def test_bilinear_demosaic_is_exact_on_smooth_images_and_interpolates_inside() -> None:
    flat = np.full((10, 12, 3), (10, 100, 200), dtype=np.uint8)
    assert np.array_equal(degradations.bilinear_demosaic(degradations.bayer_mosaic(flat)), flat)
    ramp = np.repeat(np.repeat((np.arange(12) * 20)[None, :, None], 10, 0), 3, 2).astype(np.uint8)
    restored = degradations.bilinear_demosaic(degradations.bayer_mosaic(ramp))
    assert np.array_equal(restored[1:-1, 1:-1], ramp[1:-1, 1:-1])  # linear in x: bilinear is exact inside


@pytest.mark.parametrize("quality", [0, 101, -5, 50.5, True])
def test_jpeg_quality_outside_1_100_is_refused(quality: object) -> None:
    with pytest.raises(ValueError, match="JPEG quality must be an integer in 1..100"):
        degradations.jpeg(np.zeros((16, 16), np.uint8), quality)


def test_jpeg_on_colour_codes_the_luma_or_rgb() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 48, 3)).astype(np.uint8)
    assert degradations.jpeg(image, 40).shape == (32, 48)
    assert degradations.jpeg(image, 40, channel="rgb").shape == (32, 48, 3)
    assert np.abs(degradations.jpeg(image, 100, channel="y").astype(int) - degradations.rgb_to_y_uint8(image)).max() <= 2
