"""Oracle: our scalar reference dequantization vs the gguf package (gguf==0.19.0, numpy).

Writes random blocks (finite f16 scales, plus adversarial ones: d = 65504, subnormal d, dmin > d,
negative d, zero d, all-0xff payloads with every nibble 15 and every 6-bit scale 63, all-zero
scales) for Q4_K, Q5_K, Q6_K, Q8_0, the GGML legacy formats, IQ4_NL, Q3_K, Q2_K, IQ4_XS, MXFP4 (whose E8M0 exponent byte
takes every value, those that overflow the largest codes to inf included) and the grid-based
IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S and IQ1_M (every grid index, sign pattern and
sub-block scale reachable from random bytes; IQ1_M's split f16 d written into its four nibbles),
dequantizes them with $QMOE_EXAMPLE (our reference) and with
gguf.quants.dequantize, and requires every element to be bit-identical. Exits non-zero on any
mismatch, printing the first ones.
"""

import os
import subprocess
import sys

import numpy as np
from gguf import GGMLQuantizationType
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

SEED = 20261128
N_RANDOM = 4096  # random blocks per type, in addition to the adversarial ones

# IQ1_M's f16 d has no field of its own: nibble t of its bits is the top nibble of the u16 word
# at byte 48 + 2t (the words' low 12 bits are 3-bit scales). This marker in TYPES stands for it.
IQ1_M_D = "iq1_m.d"


def put_scale(b, off, bits):
    """Writes the f16 bit pattern `bits` into the block(s) `b` (last axis: bytes) at `off`."""
    bits = np.asarray(bits, dtype=np.uint16)
    if off == IQ1_M_D:
        for t in range(4):
            at = 48 + 2 * t
            word = b[..., at:at + 2].copy().view(np.uint16)[..., 0]
            word = (word & 0x0FFF) | (((bits >> (4 * t)) & 0xF) << 12)
            b[..., at:at + 2] = word.astype(np.uint16)[..., None].view(np.uint8)
    else:
        b[..., off:off + 2] = bits[..., None].view(np.uint8)


# name, gguf type, block bytes, weights per block, byte offsets of the f16 scales
TYPES = [
    ("q4_k", GGMLQuantizationType.Q4_K, 144, 256, [0, 2]),
    ("q5_k", GGMLQuantizationType.Q5_K, 176, 256, [0, 2]),
    ("q6_k", GGMLQuantizationType.Q6_K, 210, 256, [208]),
    ("q8_0", GGMLQuantizationType.Q8_0, 34, 32, [0]),
    ("q4_0", GGMLQuantizationType.Q4_0, 18, 32, [0]),
    ("q4_1", GGMLQuantizationType.Q4_1, 20, 32, [0, 2]),
    ("q5_0", GGMLQuantizationType.Q5_0, 22, 32, [0]),
    ("q5_1", GGMLQuantizationType.Q5_1, 24, 32, [0, 2]),
    ("iq4_nl", GGMLQuantizationType.IQ4_NL, 18, 32, [0]),
    ("q3_k", GGMLQuantizationType.Q3_K, 110, 256, [108]),
    ("q2_k", GGMLQuantizationType.Q2_K, 84, 256, [80, 82]),
    ("iq4_xs", GGMLQuantizationType.IQ4_XS, 136, 256, [0]),
    ("mxfp4", GGMLQuantizationType.MXFP4, 17, 32, []),
    ("iq2_xxs", GGMLQuantizationType.IQ2_XXS, 66, 256, [0]),
    ("iq2_xs", GGMLQuantizationType.IQ2_XS, 74, 256, [0]),
    ("iq2_s", GGMLQuantizationType.IQ2_S, 82, 256, [0]),
    ("iq3_xxs", GGMLQuantizationType.IQ3_XXS, 98, 256, [0]),
    ("iq3_s", GGMLQuantizationType.IQ3_S, 110, 256, [0]),
    ("iq1_s", GGMLQuantizationType.IQ1_S, 50, 256, [0]),
    ("iq1_m", GGMLQuantizationType.IQ1_M, 56, 256, [IQ1_M_D]),
]

# MXFP4's E8M0 exponent byte (offset 0): every byte is a legal scale. Random blocks draw it
# uniformly; the adversarial ones take these: subnormal half-scales (0, 1), the smallest normal
# (2), one half and its neighbours, the largest with every code finite (252) and the three whose
# largest codes overflow f32 (253..255).
E8M0_OFFSETS = {"mxfp4": [0]}
SPECIAL_E8M0 = [0, 1, 2, 126, 127, 128, 252, 253, 254, 255]

SPECIAL_SCALES = [
    0x7BFF,  # 65504, the largest finite f16
    0xFBFF,  # -65504
    0x0001,  # smallest subnormal
    0x03FF,  # largest subnormal
    0x8001,  # negative subnormal
    0x0400,  # smallest normal
    0x0000,  # zero
    0x8000,  # negative zero
    0x3C00,  # 1.0
    0x2E66,  # ~0.1
]


def finite_f16_bits(rng, n):
    """n random finite f16 bit patterns: half realistic scales, half any finite pattern."""
    realistic = np.float16(rng.uniform(1e-4, 0.05, n)).view(np.uint16)
    anybits = rng.integers(0, 1 << 16, n, dtype=np.uint16)
    anybits = np.where((anybits & 0x7C00) == 0x7C00, anybits & 0x83FF, anybits).astype(np.uint16)
    pick = rng.integers(0, 2, n).astype(bool)
    return np.where(pick, realistic, anybits).astype(np.uint16)


def make_e8m0_blocks(rng, nbytes, e_offsets):
    """Random blocks (any exponent byte) plus every special exponent under each payload."""
    blocks = rng.integers(0, 256, (N_RANDOM, nbytes), dtype=np.uint8)
    adversarial = []
    for payload in ("random", "ff", "zero"):
        for e in SPECIAL_E8M0:
            if payload == "random":
                b = rng.integers(0, 256, nbytes, dtype=np.uint8)
            else:
                b = np.full(nbytes, 0xFF if payload == "ff" else 0, dtype=np.uint8)
            for off in e_offsets:
                b[off] = e
            adversarial.append(b)
    return np.concatenate([blocks, np.stack(adversarial)], axis=0)


def make_blocks(rng, nbytes, scale_offsets):
    blocks = rng.integers(0, 256, (N_RANDOM, nbytes), dtype=np.uint8)
    for off in scale_offsets:
        put_scale(blocks, off, finite_f16_bits(rng, N_RANDOM))
    adversarial = []
    for payload in ("random", "ff", "zero"):
        for s in SPECIAL_SCALES:
            for s2 in (SPECIAL_SCALES if len(scale_offsets) == 2 else [None]):
                if payload == "random":
                    b = rng.integers(0, 256, nbytes, dtype=np.uint8)
                elif payload == "ff":
                    b = np.full(nbytes, 0xFF, dtype=np.uint8)
                else:
                    b = np.zeros(nbytes, dtype=np.uint8)
                put_scale(b, scale_offsets[0], s)
                if s2 is not None:
                    put_scale(b, scale_offsets[1], s2)
                adversarial.append(b)
    return np.concatenate([blocks, np.stack(adversarial)], axis=0)


def main():
    example = os.environ["QMOE_EXAMPLE"]
    work = os.environ["QMOE_WORKDIR"]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(SEED)
    failed = False
    summary = []
    for name, gtype, nbytes, nweights, offs in TYPES:
        if GGML_QUANT_SIZES[gtype] != (nweights, nbytes):
            print(f"dequant oracle: {name}: {nweights} weights in {nbytes} bytes here, "
                  f"gguf says {GGML_QUANT_SIZES[gtype]}")
            failed = True
            continue
        if name in E8M0_OFFSETS:
            blocks = make_e8m0_blocks(rng, nbytes, E8M0_OFFSETS[name])
        else:
            blocks = make_blocks(rng, nbytes, offs)
        src = os.path.join(work, f"{name}.bin")
        dst = os.path.join(work, f"{name}.f32")
        blocks.tofile(src)
        subprocess.run([example, name, src, dst], check=True)
        ours = np.fromfile(dst, dtype=np.float32)
        theirs = np.asarray(dequantize(blocks.reshape(-1), gtype), dtype=np.float32).reshape(-1)
        if ours.shape != theirs.shape:
            print(f"dequant oracle: {name}: {ours.size} values from ours, {theirs.size} from gguf")
            failed = True
            continue
        a = ours.view(np.uint32)
        b = theirs.view(np.uint32)
        bad = np.nonzero(a != b)[0]
        nblocks = blocks.shape[0]
        summary.append(f"{name} {nblocks} blocks / {ours.size} values: {bad.size} mismatches")
        if bad.size:
            failed = True
            for i in bad[:20]:
                print(f"  {name} element {i} (block {i // nweights}, weight {i % nweights}): "
                      f"ours {ours[i]!r} (0x{a[i]:08x}) gguf {theirs[i]!r} (0x{b[i]:08x})")
    print("dequant oracle vs gguf==0.19.0: " + "; ".join(summary) + ("" if not failed else " -- FAILED"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
