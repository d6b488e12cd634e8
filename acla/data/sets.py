"""Benchmark and training image sets by name, verified against a manifest before use.

A *data root* (``ACLA_DATA``, or ``data.root`` in params.yaml, or ``--data-root``) holds one folder
per set and a ``MANIFEST.csv`` with one row per image (``set,file,...,sha256,...``), the layout of
the project's shared data. Every file of a set is hashed once per process and compared with the
manifest; a missing, extra-short or altered file is named in the error.

With no data root, ``bundled-train`` and ``bundled-test`` are natural images that scikit-image
ships inside its wheel, checked against scikit-image's own sha256 registry: enough for the smoke
profile on a machine that has nothing else.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from acla.data.fetch import ARCHIVES, recorded_checksum_path
from acla.files import sha256_file
from acla.images import read_image

DATA_ROOT_VARIABLE = "ACLA_DATA"
MANIFEST_NAME = "MANIFEST.csv"


@dataclass(frozen=True)
class SetInfo:
    canonical_size: int  # images in the published benchmark (more than we may hold)
    color: str  # "rgb", "gray" or "mixed": what the files are
    tasks: tuple[str, ...]  # task kinds this set is a benchmark (or training set) for


SETS: dict[str, SetInfo] = {
    "Set5": SetInfo(5, "rgb", ("sr",)),
    "Set14": SetInfo(14, "mixed", ("sr",)),
    "B100": SetInfo(100, "rgb", ("sr",)),
    "Urban100": SetInfo(100, "rgb", ("sr", "denoise", "demosaic")),
    "Set12": SetInfo(12, "gray", ("denoise",)),
    "BSD68": SetInfo(68, "gray", ("denoise",)),
    "CBSD68": SetInfo(68, "rgb", ("denoise", "demosaic")),
    "Kodak24": SetInfo(24, "rgb", ("denoise", "demosaic")),
    "McMaster": SetInfo(18, "rgb", ("denoise", "demosaic")),
    "LIVE1": SetInfo(29, "rgb", ("jpeg",)),
    "Classic5": SetInfo(5, "gray", ("jpeg",)),
    "T91": SetInfo(91, "rgb", ("train",)),
    "Train400": SetInfo(400, "gray", ("train",)),
}

# scikit-image's wheel: a fixed split of its natural colour photographs.
BUNDLED: dict[str, tuple[str, ...]] = {
    "bundled-train": ("rocket.jpg", "motorcycle_left.png", "motorcycle_right.png", "ihc.png", "hubble_deep_field.jpg"),
    "bundled-test": ("astronaut.png", "chelsea.png", "coffee.png"),
}


class DataError(ValueError):
    """A data root, set or file that is missing or not what the manifest says."""


def resolve_data_root(cli_value: str | Path | None = None, config_value: str | Path | None = None) -> Path | None:
    """The data root: ``--data-root`` beats params.yaml's ``data.root`` beats ``$ACLA_DATA``.

    Returns None when none is set (the bundled images are then the only sets); a root that is set
    but does not exist is an error, never a silent fallback.
    """
    for value, origin in (
        (cli_value, "--data-root"),
        (config_value, "params.yaml data.root"),
        (os.environ.get(DATA_ROOT_VARIABLE) or None, f"${DATA_ROOT_VARIABLE}"),
    ):
        if value:
            root = Path(value).expanduser()
            if not root.is_dir():
                raise DataError(f"data root {root} (from {origin}) is not a directory")
            return root
    return None


@dataclass(frozen=True)
class ManifestRow:
    set: str
    file: str
    channels: int
    sha256: str


def read_manifest(root: Path) -> dict[str, list[ManifestRow]]:
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path} not found: a data root needs a manifest (set,file,...,sha256 rows)")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"set", "file", "channels", "sha256"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(f"{path}: missing columns {sorted(missing)}")
        rows: dict[str, list[ManifestRow]] = {}
        for row in reader:
            rows.setdefault(row["set"], []).append(ManifestRow(row["set"], row["file"], int(row["channels"]), row["sha256"]))
    return rows


_verified: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 already checked


def verify_file(path: Path, expected_sha256: str) -> None:
    """Hash ``path`` (once per process while it is unchanged) and compare with the manifest."""
    if not path.is_file():
        raise DataError(f"missing file {path} (listed in the manifest)")
    status = path.stat()
    key = (str(path.resolve()), status.st_size, status.st_mtime_ns)
    actual = _verified.get(key) or sha256_file(path)
    if actual != expected_sha256:
        raise DataError(f"corrupt file {path}: sha256 {actual} does not match the manifest's {expected_sha256}")
    _verified[key] = actual


@dataclass(frozen=True)
class ImageSet:
    """A named list of image files; images are decoded on demand, in file order."""

    name: str
    files: tuple[Path, ...]
    canonical_size: int
    crop: int = 0  # > 0: every image is centre-cropped to at most crop x crop (a smaller, labelled test)

    @property
    def partial(self) -> bool:
        return len(self.files) < self.canonical_size

    @property
    def label(self) -> str:
        """The set's name, marked when it holds fewer images than the published benchmark or is cropped."""
        label = f"{self.name} (partial {len(self.files)}/{self.canonical_size})" if self.partial else self.name
        return f"{label} (centre {self.crop}px)" if self.crop else label

    def __len__(self) -> int:
        return len(self.files)

    def image_names(self) -> list[str]:
        return [path.stem for path in self.files]

    def read(self, index: int) -> np.ndarray:
        image = read_image(self.files[index])
        if self.crop:
            top, left = (max((size - self.crop) // 2, 0) for size in image.shape[:2])
            image = image[top : top + self.crop, left : left + self.crop]
        return image

    def __iter__(self) -> Iterator[tuple[str, np.ndarray]]:
        for index, path in enumerate(self.files):
            yield path.stem, self.read(index)


def open_set(name: str, root: Path | None, *, verify: bool = True, crop: int = 0) -> ImageSet:
    """A benchmark or training set by name, its files checked against the manifest; ``crop`` > 0
    centre-crops every image (the smoke profile's small test images)."""
    image_set = _open_set(name, root, verify)
    return dataclasses.replace(image_set, crop=crop) if crop else image_set


def _open_set(name: str, root: Path | None, verify: bool) -> ImageSet:
    if name in BUNDLED:
        return bundled_set(name)
    if name not in SETS and name not in ARCHIVES:
        raise DataError(f"unknown set {name!r}; known: {sorted(SETS) + sorted(ARCHIVES) + sorted(BUNDLED)}")
    if root is None:
        raise DataError(
            f"set {name!r} needs a data root: set ${DATA_ROOT_VARIABLE}, params.yaml data.root or --data-root "
            f"(or use the bundled sets {sorted(BUNDLED)})"
        )
    if name in ARCHIVES:
        return fetched_set(name, root)
    rows = read_manifest(root).get(name)
    if not rows:
        raise DataError(f"set {name!r} has no rows in {root / MANIFEST_NAME}")
    files = tuple(root / name / row.file for row in rows)
    if verify:
        for path, row in zip(files, rows):
            verify_file(path, row.sha256)
    return ImageSet(name, files, SETS[name].canonical_size)


def available_sets(root: Path | None) -> list[str]:
    """Known sets that the data root's manifest lists (in the order of ``SETS``)."""
    if root is None:
        return []
    listed = read_manifest(root)
    return [name for name in SETS if name in listed]


def fetched_set(name: str, root: Path) -> ImageSet:
    """A folder that ``python -m acla.data fetch`` extracted; verified by its archive's checksum."""
    archive = ARCHIVES[name]
    if not recorded_checksum_path(root, name).is_file():
        raise DataError(f"set {name!r} is not fetched into {root}: run `python -m acla.data fetch {name}`")
    files = tuple(sorted((root / archive.folder).rglob("*.png")))
    if not files:
        raise DataError(f"set {name!r}: no PNG files under {root / archive.folder}")
    return ImageSet(name, files, archive.size or len(files))


def bundled_set(name: str) -> ImageSet:
    import skimage
    from skimage.data._registry import registry  # scikit-image's own sha256 of each shipped file

    folder = Path(skimage.__file__).parent / "data"
    files = tuple(folder / file for file in BUNDLED[name])
    for path in files:
        verify_file(path, registry[f"data/{path.name}"])
    return ImageSet(name, files, len(files))
