"""Sets of half-open integer intervals: which bytes of a message (or which PSNs) have arrived."""

from __future__ import annotations

from bisect import bisect_left, bisect_right


class IntervalSet:
    """Disjoint, sorted [start, end) intervals; adjacent ones merge. ``add`` says how much was new."""

    __slots__ = ("starts", "ends")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def __len__(self) -> int:
        return len(self.starts)

    def add(self, start: int, end: int) -> int:
        if start >= end:
            return 0
        starts, ends = self.starts, self.ends
        if not ends or start > ends[-1]:
            starts.append(start)
            ends.append(end)
            return end - start
        if start == ends[-1]:  # the common case: the next bytes in order
            ends[-1] = end
            return end - start
        first = bisect_left(ends, start)  # first interval that ends at or after start
        last = bisect_right(starts, end)  # intervals before this index start at or before end
        if first == last:  # touches nothing
            starts.insert(first, start)
            ends.insert(first, end)
            return end - start
        covered = sum(min(e, end) - max(s, start) for s, e in zip(starts[first:last], ends[first:last], strict=True)
                      if min(e, end) > max(s, start))
        new_start = min(start, starts[first])
        new_end = max(end, ends[last - 1])
        starts[first:last] = [new_start]
        ends[first:last] = [new_end]
        return (end - start) - covered

    def prefix(self) -> int:
        """The end of the run that starts at 0 (how much arrived in order), 0 if none does."""
        return self.ends[0] if self.starts and self.starts[0] == 0 else 0

    def first_start(self) -> int:
        return self.starts[0]

    def take_prefix(self, upto: int) -> int:
        """Remove the intervals that start at or before ``upto``; return the new contiguous end."""
        while self.starts and self.starts[0] <= upto:
            upto = max(upto, self.ends[0])
            del self.starts[0]
            del self.ends[0]
        return upto
