"""Virtual time: integer picoseconds. No floats in time arithmetic."""

PS_PER_NS = 1_000
PS_PER_US = 1_000_000
PS_PER_MS = 1_000_000_000
PS_PER_S = 1_000_000_000_000

NEVER = 1 << 62  # "no event": larger than any reachable virtual time, still an int


def serialization_ps(nbytes: int, rate_bps: int) -> int:
    """Time to clock ``nbytes`` onto a wire at ``rate_bps``, rounded up to a whole picosecond."""
    return -(-nbytes * 8 * PS_PER_S // rate_bps)


def emission_ps(index: int, nbytes: int, rate_bps: int) -> int:
    """Offset of the ``index``-th frame of a constant-rate stream: exact, no accumulated drift."""
    return -(-index * nbytes * 8 * PS_PER_S // rate_bps)
