"""The vocabulary of an index's options, in one place: what Index.build accepts, what a saved
header may say and what the CLI offers (layout names come from the registry, hashpivot.layouts)."""

from __future__ import annotations

from typing import Literal

from .layouts import LAYOUT_NAMES

LayoutName = Literal["flat", "partitioned", "ivf"]
StoreName = Literal["float32", "float16", "int8"]
Metric = Literal["cosine", "ip"]
ScoringName = Literal["asymmetric", "hamming"]

LAYOUTS = LAYOUT_NAMES
STORES = ("float32", "float16", "int8", None)
METRICS = ("cosine", "ip")
MAX_ROWS = 1 << 40  # rows an index (or a saved header) may claim
MAX_ID = 2**63 - 1
