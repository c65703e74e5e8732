"""Many 8-byte hashes in little memory: gathered unsorted, then sorted into one array.

The ledger (a hash per submitted row) and the repeats in a listing can each run to millions.
A Python set or list costs 40 to 80 bytes an entry; an ``array('q')`` costs 8, and sorting it
bucket by bucket keeps the Python ints that ``sorted()`` needs to one bucket at a time.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from hashlib import blake2b

__all__ = ["HashBuckets", "stable_hash"]


def stable_hash(text: str) -> int:
    """A signed 64-bit hash of ``text`` that is the same in every process and on every machine
    (the first 8 bytes of its BLAKE2b), unlike ``hash()``, which Python salts per process. The
    ledger keys sources by it; about 0.4 us a call."""
    return int.from_bytes(blake2b(text.encode(), digest_size=8).digest(), "little", signed=True)


class HashBuckets:
    """Hashes gathered in 256 arrays by their top byte (hashes are uniform): the peak while
    sorting stays near 16 bytes an entry, where ``sorted()`` of the whole would need about 50."""

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._arrays = [array("q") for _ in range(256)]
        for value in values:
            self.add(value)

    def add(self, value: int) -> None:
        self._arrays[(value >> 56) + 128].append(value)

    def __len__(self) -> int:
        return sum(map(len, self._arrays))

    def sorted(self, *, unique: bool = False) -> array[int]:
        """Every hash in order (each once with ``unique``); the buckets are emptied as used."""
        found = array("q")
        for index, bucket in enumerate(self._arrays):
            self._arrays[index] = array("q")
            found.extend(sorted(set(bucket)) if unique else sorted(bucket))
        return found
