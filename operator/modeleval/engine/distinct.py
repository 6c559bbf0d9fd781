"""A column's distinct-count sketch (Apache DataSketches' HLL) from its distinct values, with one
call into the sketch per register that a value raises rather than one per value.

The sketch takes one value per call, which at tens of thousands of distinct values per column
is most of a profile's time. In HLL mode a sketch is its registers: register ``slot`` holds
the largest ``rho`` of the values hashed to it (``slot`` is the low bits of the first half of
the value's 128-bit MurmurHash3, ``rho`` the leading zeros of the second half, plus one). Those
are computed here for every value at once with numpy, the hash exactly as DataSketches computes
it (test_profile checks the bytes against a sketch fed every value), and only the values that
set some register's maximum are given to the sketch: about 1.5 x 2**lg_k values, whatever the
column's distinct count. The registers come out the same. The sketch's in-order (HIP)
estimate would not, as it counts every update; so the kept values go into two sketches and
their union, whose estimate reads the registers alone (DataSketches' out-of-order estimate,
what any merge of shards gives anyway).

Below ``FILTER_ABOVE`` distinct values the sketch may still hold its values in its list or set
modes, where every value counts: it gets them all.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import datasketches as ds
import numpy as np

try:  # the compiled distinct pass (setup.py builds it with the LETOR tokenizer); else numpy
    from ._letor import registers as _compiled_registers
except ImportError:
    _compiled_registers = None

DATASKETCHES_SEED = 9001  # DataSketches' default hash seed (DEFAULT_SEED)
FILTER_ABOVE = 8192  # distinct values past which a 2**11-register sketch is surely in HLL mode

_U64 = np.uint64
_C1, _C2 = _U64(0x87C37B91114253D5), _U64(0x4CF5AD432745937F)
_FMIX1, _FMIX2 = _U64(0xFF51AFD7ED558CCD), _U64(0xC4CEB9FE1A85EC53)


def _fmix(value: np.ndarray) -> np.ndarray:
    value ^= value >> _U64(33)
    value *= _FMIX1
    value ^= value >> _U64(33)
    value *= _FMIX2
    value ^= value >> _U64(33)
    return value


def murmur3_int64(keys: np.ndarray, seed: int = DATASKETCHES_SEED) -> tuple[np.ndarray, np.ndarray]:
    """MurmurHash3_x64_128 of each key's 8 little-endian bytes (what a sketch's ``update(int)``
    hashes): both 64-bit halves. An 8-byte key is all tail: one mixed word, then finalisation."""
    with np.errstate(over="ignore"):
        word = keys.astype(np.int64).view(np.uint64) * _C1
        word = ((word << _U64(31)) | (word >> _U64(33))) * _C2
        first = np.full(len(word), seed, np.uint64) ^ word ^ _U64(8)
        second = np.full(len(word), seed ^ 8, np.uint64)
        first += second
        second += first
        first, second = _fmix(first), _fmix(second)
        first += second
        second += first
    return first, second


def _rho(second: np.ndarray) -> np.ndarray:
    """Leading zeros of each 64-bit value plus one, at most 63 (DataSketches caps the zeros at
    62). frexp gives the bit length of the top 53 bits exactly (they fit a double)."""
    top = (second >> _U64(11)).astype(np.float64)
    low = (second & _U64(0x7FF)).astype(np.float64)
    length = np.where(top > 0, np.frexp(top)[1] + 11, np.frexp(low)[1])
    return np.minimum(64 - length, 62) + 1


def register_setters(keys: np.ndarray, lg_k: int) -> np.ndarray:
    """The keys that hold some register's largest value (ties kept)."""
    first, second = murmur3_int64(keys)
    slot = (first & _U64((1 << lg_k) - 1)).astype(np.intp)
    rho = _rho(second)
    registers = np.zeros(1 << lg_k, rho.dtype)
    np.maximum.at(registers, slot, rho)
    return keys[rho == registers[slot]]


def distinct_sketch(keys: np.ndarray, lg_k: int, kind: ds.tgt_hll_type) -> ds.hll_sketch:
    """The HLL sketch of integer keys (each distinct value once)."""
    if len(keys) <= FILTER_ABOVE:
        sketch = ds.hll_sketch(lg_k, kind)
        deque(map(sketch.update, keys.tolist()), maxlen=0)
        return sketch
    setters = register_setters(keys, lg_k)
    union = ds.hll_union(lg_k)
    for half in (setters[::2], setters[1::2]):
        sketch = ds.hll_sketch(lg_k, kind)
        deque(map(sketch.update, half.tolist()), maxlen=0)
        union.update(sketch)
    return union.get_result(kind)


@dataclass
class Registers:
    """A column's distinct-count state as a shard computes and the driver merges it: the HLL
    registers (DataSketches' hash and register layout: ``rho`` the largest leading-zero count
    plus one of the keys hashed to each, ``keys`` one key that set it) and, while there are at
    most ``FILTER_ABOVE``, every distinct key (``few``). Merging takes each register's larger
    value (what an HLL union does) and unites the few keys; the sketch is built once, from the
    merged state (:meth:`sketch`): feeding it the keys that set the registers gives it the
    registers a sketch fed every value would have (``distinct_sketch``)."""

    rho: np.ndarray
    keys: np.ndarray
    few: np.ndarray | None

    @classmethod
    def empty(cls, lg_k: int) -> "Registers":
        return cls(np.zeros(1 << lg_k, np.uint8), np.zeros(1 << lg_k, np.int64),
                   np.empty(0, np.int64))

    @classmethod
    def of_sorted(cls, finite: np.ndarray, lg_k: int) -> "Registers":
        """The registers of ascending finite values (keys: their float32 bits, -0.0 as 0.0)."""
        state = cls.empty(lg_k)
        if finite.dtype == np.float32 and _compiled_registers is not None:
            distinct = _compiled_registers(np.ascontiguousarray(finite), state.rho, state.keys,
                                           DATASKETCHES_SEED)
            state.few = cls.few_of_sorted(finite) if distinct <= FILTER_ABOVE else None
            return state
        keys = np.unique(_keys(finite))
        first, second = murmur3_int64(keys)
        slot = (first & _U64((1 << lg_k) - 1)).astype(np.intp)
        rho = _rho(second).astype(np.uint8)
        np.maximum.at(state.rho, slot, rho)
        setters = rho == state.rho[slot]
        state.keys[slot[setters]] = keys[setters]
        state.few = keys if len(keys) <= FILTER_ABOVE else None
        return state

    @staticmethod
    def few_of_sorted(finite: np.ndarray) -> np.ndarray:
        """The distinct keys of ascending finite values, in the keys' order."""
        return np.unique(_keys(_distinct_sorted(finite)))

    def merged(self, other: "Registers") -> "Registers":
        larger = other.rho > self.rho
        few = None if self.few is None or other.few is None else np.union1d(self.few, other.few)
        return Registers(np.where(larger, other.rho, self.rho),
                         np.where(larger, other.keys, self.keys),
                         few if few is not None and len(few) <= FILTER_ABOVE else None)

    def sketch(self, lg_k: int, kind: ds.tgt_hll_type) -> ds.hll_sketch:
        """The DataSketches HLL sketch of every key these registers saw."""
        if self.few is not None:
            return distinct_sketch(self.few, lg_k, kind)
        setters = self.keys[self.rho > 0]
        union = ds.hll_union(lg_k)
        for half in (setters[::2], setters[1::2]):  # the union's estimate reads the registers
            sketch = ds.hll_sketch(lg_k, kind)
            deque(map(sketch.update, half.tolist()), maxlen=0)
            union.update(sketch)
        return union.get_result(kind)


def _distinct_sorted(ordered: np.ndarray) -> np.ndarray:
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _keys(finite: np.ndarray) -> np.ndarray:
    return (finite.astype(np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
