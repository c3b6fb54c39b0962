"""Block-wise weight quantisation in ONNX Runtime's `MatMulNBits` / `GatherBlockQuantized`
layout, in numpy.

A weight W (..., N, K) used as x @ W.T is cut into blocks of `block` values along K (the
input dimension). Each block stores one float scale `d` and `block` unsigned codes of `bits`
bits; the value is (code - 2^(bits-1)) * d, the default zero point of both ops, so no zero
points are stored. `d` starts from the block's largest-magnitude value divided by -2^(bits-1)
(llama.cpp's q4_0 rule: that value maps to code 0 and every code is used); at 4 bits each
block then takes, of a few shrunken candidates of that scale, the one with the least
squared error (clipping the peak a little buys finer steps for the rest); at 8 bits, of
that and q8_0's |peak| / 127 (codes 1 to 255). Two 4-bit codes share a byte, the first in
the low nibble.

So a GGUF block of 32 comes through unchanged: a dequantised q4_0 block is requantised to
its own scale and codes at 4 bits, a q8_0 block at 8 bits (no error to improve on).

`SeededBlocks` stands in for a weight that is born quantised: `python -m export bench-full`
draws a full-size model's codes and scales from a seed, tensor by tensor, and never makes
the floats (25 G parameters of them would be 100 GB, and quantising them hours).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Rows quantised at a time: bounds the float temporaries for one (E, N, K) expert table.
_ROWS_PER_CHUNK = 1 << 14
# Scale candidates tried per block, as fractions of the q4_0-rule scale (peak / -2^(bits-1)):
# shrunken at 4 bits; at 8 bits q8_0's rule, |peak| / 127 = -peak / -128 * 128 / 127 (the
# sign of the scale does not matter: codes are symmetric about the zero point).
_CANDIDATES = {4: (0.95, 0.9, 0.85, 0.8, 0.75), 8: (-128 / 127,)}


@dataclass(frozen=True)
class Quantized:
    """Codes (..., N, K * bits / 8) uint8 and scales (..., N, K / block) float32."""

    codes: np.ndarray
    scales: np.ndarray
    bits: int
    block: int


class SeededBlocks(np.ndarray):
    """A weight whose quantised blocks are drawn from `seed` instead of computed: a zero-
    stride float32 view of the shape (no memory), which `quantize_unpacked` turns into
    uniform codes and scales around `scale` / 4.6 (about the weight's standard deviation
    `scale`; 4.6 is that of the codes -8..7). Views (transposes, reshapes) keep the seed."""

    seed: int
    scale: float

    @classmethod
    def of(cls, shape: tuple[int, ...], seed: int, scale: float) -> SeededBlocks:
        view = np.broadcast_to(np.zeros((), np.float32), shape).view(cls)
        view.seed, view.scale = seed, scale
        return view

    def __array_finalize__(self, obj: object) -> None:
        self.seed = getattr(obj, "seed", 0)
        self.scale = getattr(obj, "scale", 1.0)

    def draw(self, bits: int, block: int) -> Quantized:
        """Unpacked codes (..., N, K) and float32 scales (..., N, K / block)."""
        *lead, k = self.shape
        rng = np.random.default_rng(self.seed)
        codes = rng.integers(0, 1 << bits, size=self.shape, dtype=np.uint8)
        spread = rng.random((*lead, k // block), dtype=np.float32)
        scales = (self.scale / 4.6 * (0.8 + 0.4 * spread)).astype(np.float32)
        return Quantized(codes, scales, bits, block)


def block_size_for(columns: int, preferred: int) -> int | None:
    """The block size for a K of `columns`: `preferred` when it divides K, else 16 when 16
    does (both ops need a power of two >= 16), else None (keep the weight as floats)."""
    for block in (preferred, 16):
        if block >= 16 and columns % block == 0:
            return block
    return None


def quantize(weight: np.ndarray, bits: int, block: int) -> Quantized:
    """Quantise `weight` (..., N, K) along its last axis; K must be a multiple of `block`."""
    q = quantize_unpacked(weight, bits, block)
    codes = q.codes
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return Quantized(codes, q.scales, bits, block)


def quantize_unpacked(weight: np.ndarray, bits: int, block: int) -> Quantized:
    """As `quantize`, one code per byte (..., N, K) even at 4 bits."""
    *lead, k = weight.shape
    if k % block:
        raise ValueError(f"{k} columns are not a multiple of the block size {block}")
    if bits not in (4, 8):
        raise ValueError(f"bits must be 4 or 8, got {bits}")
    if isinstance(weight, SeededBlocks):
        return weight.draw(bits, block)
    rows = weight.reshape(-1, k)
    codes = np.empty((rows.shape[0], k), np.uint8)
    scales = np.empty((rows.shape[0], k // block), np.float32)
    offset = 1 << (bits - 1)
    for start in range(0, rows.shape[0], _ROWS_PER_CHUNK):
        chunk = rows[start : start + _ROWS_PER_CHUNK].astype(np.float32)
        blocks = chunk.reshape(chunk.shape[0], k // block, block)
        peak = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[..., None], -1)[..., 0]
        base = peak / -offset
        base = np.where(base == 0, 1.0, base)
        scale, q = _codes(blocks, base, offset)
        error = np.square((q - offset) * scale[..., None] - blocks).sum(-1)
        for factor in _CANDIDATES[bits]:
            s_try, q_try = _codes(blocks, base * factor, offset)
            e_try = np.square((q_try - offset) * s_try[..., None] - blocks).sum(-1)
            better = e_try < error
            scale = np.where(better, s_try, scale)
            q = np.where(better[..., None], q_try, q)
            error = np.minimum(error, e_try)
        q = q.astype(np.uint8).reshape(chunk.shape[0], k)
        codes[start : start + chunk.shape[0]] = q
        scales[start : start + chunk.shape[0]] = scale
    return Quantized(codes.reshape(*lead, k), scales.reshape(*lead, k // block), bits, block)


def _codes(blocks: np.ndarray, scale: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes (as floats) of `blocks` (R, B, block) at per-block `scale` (R, B)."""
    q = np.clip(np.rint(blocks / scale[..., None]) + offset, 0, 2 * offset - 1)
    return scale.astype(np.float32), q


def dequantize(q: Quantized) -> np.ndarray:
    """The float32 weight `q` stands for (for tests and size checks)."""
    codes = q.codes
    if q.bits == 4:
        codes = np.stack([codes & 15, codes >> 4], -1).reshape(*codes.shape[:-1], -1)
    k = codes.shape[-1]
    values = codes.astype(np.float32) - (1 << (q.bits - 1))
    blocks = values.reshape(*codes.shape[:-1], k // q.block, q.block) * q.scales[..., None]
    result: np.ndarray = blocks.reshape(*codes.shape[:-1], k)
    return result
