"""Cell segmentation: one interface, a weight-free default backend, HPA's segmenter as an option.

    from hpacam.segmentation import SegmentationConfig, segment, segment_image

    result = segment({"red": r, "yellow": y, "blue": b})         # arrays in memory, no cache
    result = segment_image("data/synth/x/images", "ID", cfg)     # files, through data/masks
    result.cells, result.nuclei                                   # int32 (H, W), 0 = background
    result.border.is_border                                       # per cell, index i = cell i + 1

Backends: `classic` (default, `hpacam.segmentation.classic`), `hpa` (`hpacam.segmentation.hpa`).
The CLI is `python -m hpacam.segmentation` (`hpacam.segmentation.cli`); quality against truth label
images is in `hpacam.segmentation.quality` (also `python -m hpacam.segmentation.quality`). See
docs/segmentation.md.
"""

from hpacam.segmentation.border import BorderFlags, border_flags
from hpacam.segmentation.cache import CODE_VERSION, CacheKey, MaskCache
from hpacam.segmentation.core import (Backend, Segmentation, SegmentationError, as_channels, backend_names,
                                      make_backend, register_backend, segment, segment_many)
from hpacam.segmentation.folder import (FROM_CONFIG, Segmenter, open_cache, read_channels, segment_image,
                                        write_label_png)
from hpacam.segmentation.settings import (BorderSettings, CacheSettings, ClassicSettings, HpaSettings,
                                          SegmentationConfig, SegmentRunConfig)

__all__ = [
    "Backend", "BorderFlags", "BorderSettings", "CODE_VERSION", "CacheKey", "CacheSettings", "ClassicSettings",
    "FROM_CONFIG", "HpaSettings", "MaskCache", "Segmentation",
    "SegmentationConfig", "SegmentationError", "SegmentRunConfig", "Segmenter", "as_channels",
    "backend_names", "border_flags", "make_backend", "open_cache", "read_channels",
    "register_backend", "segment", "segment_image", "segment_many", "write_label_png",
]
