"""Data access: data root resolution, manifest verification, bundled sets, training patches."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from acla.data import BUNDLED, DataError, PatchDataset, open_set, resolve_data_root
from acla.data.sets import SETS, ImageSet
from acla.images import ImageReadError, read_image
from acla.tasks import Task, parse_task

MANIFEST_HEADER = ["set", "file", "width", "height", "channels", "sha256", "source_repo", "source_path", "source_commit"]


def make_root(tmp_path: Path, images: dict[str, np.ndarray], set_name: str = "Set5") -> Path:
    """A data root with one set and a manifest, like ../shared/data."""
    root = tmp_path / "data"
    (root / set_name).mkdir(parents=True)
    rows = []
    for name, array in images.items():
        path = root / set_name / name
        Image.fromarray(array).save(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        channels = 1 if array.ndim == 2 else array.shape[2]
        rows.append([set_name, name, array.shape[1], array.shape[0], channels, digest, "test", name, "0"])
    with open(root / "MANIFEST.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_HEADER)
        writer.writerows(rows)
    return root


def random_image(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def test_open_set_reads_verified_images_in_manifest_order(tmp_path: Path) -> None:
    images = {"b.png": random_image((20, 24, 3), 1), "a.png": random_image((16, 16, 3), 2)}
    root = make_root(tmp_path, images)
    image_set = open_set("Set5", root)
    assert image_set.image_names() == ["b", "a"]
    assert [np.array_equal(array, images[f"{name}.png"]) for name, array in image_set] == [True, True]
    assert image_set.partial and image_set.label == "Set5 (partial 2/5)"


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"a.png": random_image((8, 8, 3)), "b.png": random_image((8, 8, 3), 1)})
    (root / "Set5" / "b.png").unlink()
    with pytest.raises(DataError, match=r"missing file .*Set5/b\.png"):
        open_set("Set5", root)


def test_a_corrupt_file_is_named_with_both_checksums(tmp_path: Path) -> None:
    root = make_root(tmp_path, {"a.png": random_image((8, 8, 3))})
    Image.fromarray(random_image((8, 8, 3), 5)).save(root / "Set5" / "a.png")
    with pytest.raises(DataError, match=r"corrupt file .*Set5/a\.png: sha256 [0-9a-f]{64} does not match"):
        open_set("Set5", root)


def test_a_truncated_png_fails_to_decode_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(random_image((64, 64, 3))).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageReadError, match=r"cut\.png: cannot decode image"):
        read_image(path)
    with pytest.raises(ImageReadError, match="image file not found"):
        read_image(tmp_path / "absent.png")


def test_gray_required_refuses_colour_and_colour_tasks_refuse_gray(tmp_path: Path) -> None:
    path = tmp_path / "colour.png"
    Image.fromarray(random_image((8, 8, 3))).save(path)
    with pytest.raises(ImageReadError, match="a gray .L. image is required"):
        read_image(path, mode="L")
    gray = random_image((16, 16))
    with pytest.raises(ValueError, match="needs a colour image"):
        parse_task("demosaic").target(gray, "Set12/01")
    with pytest.raises(ValueError, match="needs a colour image"):
        parse_task("denoise_color_s25").target(gray, "Set12/01")
    # SR keeps gray images gray (scored on gray); gray tasks reduce colour images.
    assert parse_task("sr_x2").target(gray[:15, :15]).shape == (14, 14)
    assert parse_task("denoise_gray_s25").target(random_image((8, 8, 3))).shape == (8, 8)
    assert parse_task("jpeg_q10").target(random_image((8, 8, 3))).shape == (8, 8)


def test_unknown_names_and_missing_roots_are_clear(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACLA_DATA", raising=False)
    assert resolve_data_root() is None
    with pytest.raises(DataError, match="needs a data root"):
        open_set("Set5", None)
    with pytest.raises(DataError, match="unknown set 'Set6'"):
        open_set("Set6", tmp_path)
    with pytest.raises(DataError, match=r"from \$ACLA_DATA\) is not a directory"):
        monkeypatch.setenv("ACLA_DATA", str(tmp_path / "nowhere"))
        resolve_data_root()
    with pytest.raises(DataError, match="MANIFEST.csv not found"):
        open_set("Set5", tmp_path)
    with pytest.raises(ValueError, match="unknown task 'deblur_x2'"):
        parse_task("deblur_x2")
    with pytest.raises(ValueError, match="SR scale must be one of"):
        parse_task("sr_x5")


def test_cli_beats_config_beats_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    roots = [tmp_path / name for name in ("cli", "config", "env")]
    for root in roots:
        root.mkdir()
    monkeypatch.setenv("ACLA_DATA", str(roots[2]))
    assert resolve_data_root(roots[0], roots[1]) == roots[0]
    assert resolve_data_root(None, roots[1]) == roots[1]
    assert resolve_data_root() == roots[2]


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_bundled_sets_need_no_data_root(name: str) -> None:
    image_set = open_set(name, None)
    assert len(image_set) == len(BUNDLED[name]) and not image_set.partial
    for _, image in image_set:
        assert image.dtype == np.uint8 and image.ndim == 3 and min(image.shape[:2]) >= 256
    assert not set(BUNDLED["bundled-train"]) & set(BUNDLED["bundled-test"])


def test_shared_data_root_verifies_every_listed_set(data_root: Path) -> None:
    for name, info in SETS.items():
        image_set = open_set(name, data_root)
        assert len(image_set) == (19 if name == "Urban100" else info.canonical_size), name


def test_patch_dataset_is_seeded_and_shaped() -> None:
    images = [random_image((60, 50, 3), seed) for seed in range(3)]
    dataset = PatchDataset(images, parse_task("sr_x2"), patch_size=24, length=10, seed=3)
    lr, hr = dataset[4]
    assert lr.shape == (3, 12, 12) and hr.shape == (3, 24, 24)
    assert lr.dtype == torch.float32 and 0 <= float(hr.min()) and float(hr.max()) <= 1
    again = PatchDataset(images, parse_task("sr_x2"), patch_size=24, length=10, seed=3)
    assert torch.equal(again[4][0], lr) and torch.equal(again[4][1], hr)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[4][1], hr)


def test_patch_dataset_degrades_per_task() -> None:
    images = [random_image((40, 40, 3), seed) for seed in range(2)]
    noisy, clean = PatchDataset(images, parse_task("denoise_color_s50"), patch_size=32, length=4)[0]
    assert 0.15 < float((noisy - clean).std()) < 0.25  # sigma 50/255 ~ 0.196
    mosaic, clean = PatchDataset(images, parse_task("demosaic"), patch_size=32, length=4)[0]
    assert float((mosaic == 0).float().mean()) >= 2 / 3 - 0.01
    jpeg_input, clean = PatchDataset(images, parse_task("jpeg_q10"), patch_size=32, length=4)[0]
    assert jpeg_input.shape == clean.shape == (1, 32, 32)
    sr_gray, _ = PatchDataset([random_image((40, 40))], Task("sr", scale=4), patch_size=32, length=1)[0]
    assert sr_gray.shape == (3, 8, 8)  # gray images are replicated for an RGB network


def test_patch_dataset_refuses_patches_larger_than_an_image() -> None:
    images = [random_image((60, 60, 3)), random_image((30, 80, 3))]
    with pytest.raises(ValueError, match=r"patch_size 48 is larger than photo 1 \(80x30\)"):
        PatchDataset(images, parse_task("sr_x2"), patch_size=48, length=2, names=["photo 0", "photo 1"])
    with pytest.raises(ValueError, match="positive multiple of the scale 3"):
        PatchDataset(images, parse_task("sr_x3"), patch_size=20, length=2)


def test_image_set_is_a_plain_list_of_files(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    Image.fromarray(random_image((8, 8))).save(path)
    image_set = ImageSet("custom", (path,), 1)
    assert len(image_set) == 1 and image_set.read(0).shape == (8, 8) and image_set.label == "custom"
