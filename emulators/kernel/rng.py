"""Seeded randomness: one numpy Generator per stable name (device, link direction).

Seeds come from the scenario seed and a hash of the name that does not depend on Python's
per-process hash salt, so every host derives the same stream for the same name.
"""

import hashlib

import numpy as np


def stream_for(seed: int, name: str) -> np.random.Generator:
    words = np.frombuffer(hashlib.sha256(name.encode()).digest(), dtype=np.uint32)
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *words.tolist()])))


def mix64(value: int) -> int:
    """splitmix64's finaliser: every bit of ``value`` moves every bit of the result. A cheap, seeded
    stand-in for a hash where a Generator per use would cost too much (e.g. a QP's UDP source ports
    from its id, so ECMP spreads QPs as it spreads a collective library's)."""
    value = (value + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return value ^ (value >> 31)
