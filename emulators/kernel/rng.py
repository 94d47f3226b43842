"""Seeded randomness: one numpy Generator per stable name (device, link direction).

Seeds come from the scenario seed and a hash of the name that does not depend on Python's
per-process hash salt, so every host derives the same stream for the same name.
"""

import hashlib

import numpy as np


def stream_for(seed: int, name: str) -> np.random.Generator:
    words = np.frombuffer(hashlib.sha256(name.encode()).digest(), dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words.tolist()])))
