"""The schedule's randomness: counter-based draws, each a hash of a copy's key and what the draw is for, never a
shared generator's next number (rule 2 of injc.compiler.schedule), so no draw shifts because another step holds
more or fewer copies."""

import hashlib

import numpy as np

ROUND, ACCEPT, EXACT, ORDER, GAP = range(5)
"""What a draw is for: part of its hash, so that draws for different purposes are independent."""


def mix(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer: a bijective, well-mixed hash of uint64 values (a new array; updated in place)."""
    values = np.array(values, dtype=np.uint64)
    with np.errstate(over="ignore"):
        values ^= values >> np.uint64(30)
        values *= np.uint64(0xBF58476D1CE4E5B9)
        values ^= values >> np.uint64(27)
        values *= np.uint64(0x94D049BB133111EB)
        values ^= values >> np.uint64(31)
    return values


def draw_bits(keys: np.ndarray, *purpose: int) -> np.ndarray:
    """63 random bits per key for one purpose (a tuple of small ints), as int64."""
    salt = np.uint64(0)
    for part in purpose:
        salt = mix(np.uint64(salt) ^ np.uint64(part + 1))
    bits = mix(keys ^ salt)
    bits >>= np.uint64(1)
    return bits.view(np.int64)


def draw_uniform(keys: np.ndarray, *purpose: int) -> np.ndarray:
    """A uniform float in [0, 1) per key for one purpose."""
    return (draw_bits(keys, *purpose) >> 10).astype(np.float64) * 2.0 ** -53


def experiment_key(seed: int, name: str) -> np.uint64:
    """The hash every copy key of an experiment starts from: its name, not its place in the plan."""
    return np.uint64(int.from_bytes(hashlib.blake2b(f"{seed}\0{name}".encode(), digest_size=8).digest(), "little"))


def copy_keys(seed: int, name: str, item: np.ndarray, repetition: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        inner = mix(item.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + repetition.astype(np.uint64))
        return mix(inner ^ experiment_key(seed, name))


def random_order_within(segment: np.ndarray, keys: np.ndarray, *purpose: int) -> np.ndarray:
    """A permutation sorting by segment, in a hashed random order within each segment.

    One int64 sort key (segment, 32 hash bits) is fast; where two copies of a segment share those bits the order
    is made again from all 63 bits, so that it never depends on the order the copies came in."""
    bits = draw_bits(keys, *purpose)
    sort_key = (segment << 32) | (bits >> 31)
    order = np.argsort(sort_key)
    ordered = sort_key[order]
    if (ordered[1:] == ordered[:-1]).any():
        return np.lexsort((bits, segment))
    return order


def running_totals(segment_sorted: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """For copies grouped by segment: the total length of each copy and those before it in its segment."""
    total = np.cumsum(lengths)
    group_start = np.flatnonzero(np.r_[True, segment_sorted[1:] != segment_sorted[:-1]])
    group_size = np.diff(np.r_[group_start, len(segment_sorted)])
    return total - np.repeat(total[group_start] - lengths[group_start], group_size)
