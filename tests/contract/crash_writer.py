"""A writer for the crash tests: opens a registered backend and commits batches of 50 chunks until it is killed.

Run as ``python -m tests.contract.crash_writer vector|keyword BACKEND LOCATION SEED``; prints ``ready`` once open.
Committing (with its fsyncs) is most of what it does, so most kills fall inside a commit; the test then opens the
index and finds a whole number of batches.
"""

from __future__ import annotations

import sys

import numpy as np

from tests.contract.conftest import KEYWORD_FACTORIES, VECTOR_FACTORIES

DIM = 16


def main(kind: str, backend: str, location: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    index = (
        VECTOR_FACTORIES[backend].open(location, DIM) if kind == "vector" else KEYWORD_FACTORIES[backend].open(location)
    )
    print("ready", flush=True)
    batch = 0
    while True:
        ids = [f"s{seed}-b{batch}-{i}" for i in range(50)]
        metadata = [{"batch": batch, "seed": seed} for _ in ids]
        if kind == "vector":
            vectors = rng.standard_normal((50, DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            index.upsert(ids, vectors, metadata)  # type: ignore[arg-type]
        else:
            index.upsert(ids, [f"text {batch} {i} " + "filler words " * 40 for i in range(50)], metadata)  # type: ignore[arg-type]
        index.commit()
        batch += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
