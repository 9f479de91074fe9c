"""Does tuning generalise? Tuned on 200 real queries, measured on 300 others, for targets 0.90,
0.95 and 0.99 (issue 13): the shared man-page corpus (10k) and the 100k scale corpus.

    python bench/bench_tune.py [--n 10000 100000] [--out bench/TUNE_RESULTS.md]
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hashpivot as hp
import scale_corpus
from common import markdown_table
from hashpivot.truth import recall_at

TARGETS = (0.90, 0.95, 0.99)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    rows = []
    for n in a.n:
        if n == 10_000:
            x, q = scale_corpus.shared()
            q = q[np.random.default_rng(1).permutation(len(q))[:500]]
            truth = scale_corpus.exact_truth(q, x)
        else:
            x, q, truth = scale_corpus.load(n, scale_corpus.CACHE)
        tune_q, held, held_truth = q[:200], q[200:500], truth[200:500]
        for layout in ("flat", "ivf"):
            index = hp.Index.build(x, n_bits=128, layout=layout, extra_bits=0)
            for target in TARGETS:
                res = index.tune(tune_q, target_recall=target, store=False)
                got = recall_at(index.search(held, 10, **res.settings)[1], held_truth, 10)
                rows.append(
                    [
                        f"{n:,}",
                        layout,
                        f"{target:.2f}",
                        str(res.settings),
                        f"{res.recall:.3f}",
                        f"{got:.3f}",
                        "yes" if got >= target - 0.02 else "NO",
                    ]
                )
                print(rows[-1], flush=True)
    text = (
        f"# Tuning generalises ({hp.cpu_features()['isa']} kernels)\n\n`python "
        f"bench/bench_tune.py --n {' '.join(map(str, a.n))}`: tuned on 200 real queries, "
        "measured on 300 others; 128 bits.\n\n"
        + markdown_table(
            [
                "N",
                "layout",
                "target",
                "tuned settings",
                "recall (tuning)",
                "recall (held out)",
                ">= target - 0.02",
            ],
            rows,
        )
        + "\n"
    )
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
