"""How an index lays out its rows: one strategy per layout, found by name in the registry.

* ``flat`` (layouts/flat.py): every row scanned.
* ``partitioned`` (layouts/partitioned.py): Hamming centre codes, exact pruning or ``nprobe``;
  the codes-only layout.
* ``ivf`` (layouts/ivf.py): float k-means lists of residual codes.
"""

from .base import (
    REGISTRY,
    Capabilities,
    Layout,
    Rows,
    TrainOptions,
    check_build_options,
    layout_class,
)
from .flat import FlatLayout
from .ivf import IVFLayout
from .partitioned import PartitionedLayout

LAYOUT_NAMES = tuple(REGISTRY)

__all__ = [
    "LAYOUT_NAMES",
    "REGISTRY",
    "Capabilities",
    "FlatLayout",
    "IVFLayout",
    "Layout",
    "PartitionedLayout",
    "Rows",
    "TrainOptions",
    "check_build_options",
    "layout_class",
]
