"""Data access: benchmark sets by name, training patches, bundled fallback images, downloads."""

from acla.data.fetch import ARCHIVES, Archive, FetchError, fetch
from acla.data.patches import PatchDataset
from acla.data.sets import BUNDLED, SETS, DataError, ImageSet, available_sets, open_set, resolve_data_root

__all__ = [
    "ARCHIVES", "Archive", "BUNDLED", "DataError", "FetchError", "ImageSet", "PatchDataset", "SETS",
    "available_sets", "fetch", "open_set", "resolve_data_root",
]
