"""Deterministic randomness: seeded generators per (purpose, month) and stateless hashes."""

from __future__ import annotations

import zlib

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def tag_int(tag: str) -> int:
    return zlib.crc32(tag.encode())


def rng_for(seed: int, population: int, tag: str, month: int = 0) -> np.random.Generator:
    """A generator that depends only on (seed, population size, purpose, month)."""
    return np.random.default_rng(np.random.SeedSequence([seed, population, tag_int(tag), month]))


def _mix(x: np.ndarray) -> np.ndarray:
    x = x + _GOLD
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    return x ^ (x >> np.uint64(31))


def hash_u(seed: int, tag: str, *keys) -> np.ndarray:
    """Uniform [0, 1) values that depend only on (seed, tag, keys): stateless per-entity draws."""
    with np.errstate(over="ignore"):
        x = np.full(np.broadcast(*[np.asarray(k) for k in keys]).shape if keys else (), np.uint64((seed * 1_000_003 + tag_int(tag)) % (1 << 63)), dtype=np.uint64)
        x = _mix(x)
        for k in keys:
            x = _mix(x ^ np.asarray(k).astype(np.uint64))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)
