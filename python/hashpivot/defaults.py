"""What ``Index.build`` (and ``hashpivot build``) choose when the caller names no layout, bits or
extra bits: the configuration that was fastest at recall@10 0.95 with real text queries for the
number of rows (bench/bench_defaults.py, bench/DEFAULTS_RESULTS.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional

from .codes import MIN_BITS
from .layouts import REGISTRY, layout_class
from .layouts.base import SHARED_BUILD_DEFAULTS

# From 10,000 rows the ivf layout (256 bits + 2 extra bits) answered faster than flat at 0.95
# (10k man pages: 19.6k against flat 256 bits' 13.4k QPS); below, a flat scan costs
# microseconds and has no k-means to train on a few rows.
IVF_MIN_ROWS = 10_000
DEFAULT_BITS = 256  # at 0.95, 256 bits reranked 2-12x fewer candidates than 128 did


@dataclass(frozen=True)
class BuildChoice:
    """The layout, bits and extra bits a build uses, and which of them it chose itself."""

    layout: str
    n_bits: int
    extra_bits: int
    chosen: tuple  # the names of the options the caller left to the defaults
    rows: int

    def describe(self) -> str:
        """'ivf, 256 bits + 2 extra bits (layout, bits and extra bits chosen for 12,000 rows)'."""
        extra = f" + {self.extra_bits} extra bits" if self.extra_bits else ""
        what = f"{self.layout}, {self.n_bits} bits{extra}"
        if not self.chosen:
            return what
        names = ", ".join(n.replace("n_bits", "bits").replace("_", " ") for n in self.chosen)
        return f"{what} ({names} chosen for {self.rows:,} rows)"

    def meta(self) -> Dict[str, Any]:
        """What the index header keeps of the choice (repr shows it)."""
        return {"chosen": list(self.chosen), "rows": self.rows}


def choose_build(
    rows: int,
    dim: int,
    store: Optional[str],
    layout: Optional[str] = None,
    n_bits: Optional[int] = None,
    extra_bits: Optional[int] = None,
    **options: Any,
) -> BuildChoice:
    """The options left as None chosen from the rows and dimension (see the module docstring).
    ``options``: the layout options given; a layout left to the defaults is one that takes
    them all (n_pivots alone keeps a small index flat; n_lists makes it ivf)."""
    chosen = tuple(
        name
        for name, value in (("layout", layout), ("n_bits", n_bits), ("extra_bits", extra_bits))
        if value is None
    )
    if layout is None:
        layout = "ivf" if rows >= IVF_MIN_ROWS else "flat"
        given = [k for k, v in options.items() if v not in (None, SHARED_BUILD_DEFAULTS.get(k))]
        takes = [n for n, c in REGISTRY.items() if all(k in c.build_options for k in given)]
        if takes and layout not in takes:
            layout = takes[0]
    if n_bits is None:
        n_bits = max(MIN_BITS, min(DEFAULT_BITS, dim - dim % 64))
    if extra_bits is None:
        extra_bits = layout_class(layout).default_extra_bits if store is not None else 0
        if "extra_bits" not in layout_class(layout).build_options:  # nothing to choose there
            chosen = tuple(c for c in chosen if c != "extra_bits")
    return BuildChoice(layout, n_bits, extra_bits, chosen, rows)


__all__ = ["DEFAULT_BITS", "IVF_MIN_ROWS", "BuildChoice", "choose_build"]
