"""A column's distinct-count sketch (Apache DataSketches' HLL), built from its registers.

The sketch takes one value per call, which at tens of thousands of distinct values per column
is most of a profile's time. In HLL mode a sketch is its registers: register ``slot`` holds
the largest ``rho`` of the values hashed to it (``slot`` is the low bits of the first half of
the value's 128-bit MurmurHash3, ``rho`` the leading zeros of the second half, plus one). A
shard computes them for every value at once (in C, ``_letor.c``'s ``profile_block``, or with
numpy here; the hash exactly as DataSketches computes it: test_profile checks the bytes
against a sketch fed every value); the driver merges shards register by register and writes
the sketch in DataSketches' own serialised form (HLL_8, out of order: its estimate reads the
registers alone, as the union of shards' sketches would), which DataSketches reads back.

Below ``FILTER_ABOVE`` distinct values the sketch may still hold its values in its list or set
modes, where every value counts: it gets them all.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

import datasketches as ds
import numpy as np

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


def registers_of(keys: np.ndarray, lg_k: int) -> np.ndarray:
    """The HLL registers of integer keys."""
    first, second = murmur3_int64(keys)
    slot = (first & _U64((1 << lg_k) - 1)).astype(np.intp)
    registers = np.zeros(1 << lg_k, np.uint8)
    np.maximum.at(registers, slot, _rho(second).astype(np.uint8))
    return registers


def distinct_sketch(keys: np.ndarray, lg_k: int, kind: ds.tgt_hll_type) -> ds.hll_sketch:
    """The HLL sketch of integer keys (each distinct value once): fed them while they are few
    (its list and set modes count every one), else made from their registers (HLL_8)."""
    if len(keys) <= FILTER_ABOVE:
        sketch = ds.hll_sketch(lg_k, kind)
        deque(map(sketch.update, keys.tolist()), maxlen=0)
        return sketch
    return ds.hll_sketch.deserialize(registers_image(registers_of(keys, lg_k), lg_k))


# DataSketches' HLL serialised form (compact, HLL mode, HLL_8): the preamble's ints, serial
# version, family, then lg k, the list size (unused), flags, the current minimum and the mode;
# HIP's accumulator (unused out of order), the sums of 2**-register below and from 32, the
# registers at the minimum and the auxiliary entries (none for HLL_8); then a byte a register.
_HLL_PREAMBLE = struct.Struct("<BBBBBBBBdddii")
_PREAMBLE_INTS, _SERIAL_VERSION, _HLL_FAMILY = 10, 1, 7
_COMPACT, _OUT_OF_ORDER = 8, 16
_HLL_MODE_HLL_8 = 2 | 2 << 2  # the mode (HLL) and the target type (HLL_8)
_INVERSE_POWERS = np.ldexp(1.0, -np.arange(64))  # 2**-value for each register value


@dataclass
class Registers:
    """A column's distinct-count state as a shard computes and the driver merges it: the HLL
    registers (DataSketches' hash and register layout: ``rho`` the largest leading-zero count
    plus one of the keys hashed to each) and, while there are at most ``FILTER_ABOVE``, every
    distinct key (``few``). Merging takes each register's larger value (what an HLL union does)
    and unites the few keys; the sketch is made once, from the merged state (:meth:`sketch`)."""

    rho: np.ndarray
    few: np.ndarray | None

    @classmethod
    def empty(cls, lg_k: int) -> "Registers":
        return cls(np.zeros(1 << lg_k, np.uint8), np.empty(0, np.int64))

    @classmethod
    def of_sorted(cls, finite: np.ndarray, lg_k: int) -> "Registers":
        """The registers of ascending finite values (keys: their float32 bits, -0.0 as 0.0)."""
        keys = np.unique(_keys(finite))
        return cls(registers_of(keys, lg_k), keys if len(keys) <= FILTER_ABOVE else None)

    @staticmethod
    def few_of_sorted(finite: np.ndarray) -> np.ndarray:
        """The distinct keys of ascending finite values, in the keys' order."""
        return np.unique(_keys(_distinct_sorted(finite)))

    def merged(self, other: "Registers") -> "Registers":
        few = None if self.few is None or other.few is None else np.union1d(self.few, other.few)
        return Registers(np.maximum(self.rho, other.rho),
                         few if few is not None and len(few) <= FILTER_ABOVE else None)

    def sketch(self, lg_k: int, kind: ds.tgt_hll_type) -> ds.hll_sketch:
        """The DataSketches HLL sketch of every key these registers saw (``kind``: the few
        keys' sketch's type; one from the registers is HLL_8)."""
        if self.few is not None:
            return distinct_sketch(self.few, lg_k, kind)
        return ds.hll_sketch.deserialize(registers_image(self.rho, lg_k))


def registers_image(rho: np.ndarray, lg_k: int) -> bytes:
    """HLL_8 registers as DataSketches serialises a sketch in HLL mode that merged them out of
    order (as a union's result: no HIP estimate)."""
    if rho.shape != (1 << lg_k,) or rho.dtype != np.uint8:
        raise ValueError(f"registers: {1 << lg_k} bytes expected")
    registers = np.bincount(rho, minlength=64)  # how many registers hold each value (0-63)
    preamble = _HLL_PREAMBLE.pack(
        _PREAMBLE_INTS, _SERIAL_VERSION, _HLL_FAMILY, lg_k, 0, _COMPACT | _OUT_OF_ORDER, 0,
        _HLL_MODE_HLL_8, 0.0, float(registers[:32] @ _INVERSE_POWERS[:32]),
        float(registers[32:] @ _INVERSE_POWERS[32:]), int(registers[0]), 0)
    return preamble + rho.tobytes()


def _distinct_sorted(ordered: np.ndarray) -> np.ndarray:
    keep = np.empty(len(ordered), dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _keys(finite: np.ndarray) -> np.ndarray:
    return (finite.astype(np.float32) + np.float32(0)).view(np.int32).astype(np.int64)
