"""atheris fuzz target: Index.load on mutated index directories must either load an index that
searches, or raise hashpivot.IndexFormatError; any other exception or a crash is a bug.

    python tests/fuzz_loader.py -runs=3000        (tests/test_fuzz.py runs it, bounded)
"""

import shutil
import sys
import tempfile
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports():
    from hashpivot import Index, IndexFormatError

SEED_DIR = Path(tempfile.mkdtemp(prefix="hp-fuzz-seed-"))
WORK = Path(tempfile.mkdtemp(prefix="hp-fuzz-"))
rng = np.random.default_rng(0)
x = rng.standard_normal((200, 64)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
Index.build(x, n_bits=64, store="int8").save(SEED_DIR)
FILES = sorted(p.name for p in SEED_DIR.iterdir())
Q = x[:2]


def one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    shutil.rmtree(WORK, ignore_errors=True)
    shutil.copytree(SEED_DIR, WORK)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        name = FILES[fdp.ConsumeIntInRange(0, len(FILES) - 1)]
        raw = bytearray((WORK / name).read_bytes())
        mode = fdp.ConsumeIntInRange(0, 3)
        if mode == 0 and raw:  # flip bytes
            for _ in range(fdp.ConsumeIntInRange(1, 8)):
                raw[fdp.ConsumeIntInRange(0, len(raw) - 1)] ^= fdp.ConsumeIntInRange(1, 255)
        elif mode == 1:  # truncate
            raw = raw[: fdp.ConsumeIntInRange(0, len(raw))]
        elif mode == 2:  # splice fuzz bytes in
            at = fdp.ConsumeIntInRange(0, len(raw))
            raw[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        else:  # replace the file
            raw = bytearray(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 512)))
        (WORK / name).write_bytes(bytes(raw))
    for verify in (True, False):
        try:
            index = Index.load(WORK, verify=verify)
        except IndexFormatError:
            continue
        index.search(Q, k=3)  # whatever loads must search without crashing


if __name__ == "__main__":
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
