"""Oracle: our reference quantizers vs GGML's own reference quantizers (ggml-python, numpy, gguf).

Quantizes the same fixed-seed data, Gaussian N(0, 1) and heavy-tailed Student-t with 3 degrees
of freedom, to every type in TYPES with $QMOE_EXAMPLE (our quantizer) and with ggml's
`ggml_quantize_chunk` (no importance matrix: GGML's `quantize_row_*_ref`, and for IQ4_NL /
IQ4_XS `quantize_iq4_nl` / `quantize_iq4_xs` with their scale search), dequantizes both
with gguf.quants.dequantize (bit-identical to our reference dequant, see dequant.py) and requires,
per type and data set, either identical bytes or our relative RMSE <= 1.01 x ggml's. Prints
which of the two holds and the RMSE ratio; exits non-zero when neither does.
"""

import ctypes
import os
import subprocess
import sys

import numpy as np
import ggml
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

SEED = 20261129
ROWS = 1024  # rows of 256 values per data set: 262144 values, 1024 Q4_K/Q6_K blocks
COLS = 256
MAX_RATIO = 1.01

# name, ggml type, gguf type, block bytes, weights per block
TYPES = [
    ("q4_k", ggml.GGML_TYPE_Q4_K, GGMLQuantizationType.Q4_K, 144, 256),
    ("q6_k", ggml.GGML_TYPE_Q6_K, GGMLQuantizationType.Q6_K, 210, 256),
    ("q8_0", ggml.GGML_TYPE_Q8_0, GGMLQuantizationType.Q8_0, 34, 32),
    ("q5_k", ggml.GGML_TYPE_Q5_K, GGMLQuantizationType.Q5_K, 176, 256),
    ("q4_0", ggml.GGML_TYPE_Q4_0, GGMLQuantizationType.Q4_0, 18, 32),
    ("q4_1", ggml.GGML_TYPE_Q4_1, GGMLQuantizationType.Q4_1, 20, 32),
    ("q5_0", ggml.GGML_TYPE_Q5_0, GGMLQuantizationType.Q5_0, 22, 32),
    ("q5_1", ggml.GGML_TYPE_Q5_1, GGMLQuantizationType.Q5_1, 24, 32),
    ("iq4_nl", ggml.GGML_TYPE_IQ4_NL, GGMLQuantizationType.IQ4_NL, 18, 32),
    ("iq4_xs", ggml.GGML_TYPE_IQ4_XS, GGMLQuantizationType.IQ4_XS, 136, 256),
    ("q3_k", ggml.GGML_TYPE_Q3_K, GGMLQuantizationType.Q3_K, 110, 256),
    ("q2_k", ggml.GGML_TYPE_Q2_K, GGMLQuantizationType.Q2_K, 84, 256),
    ("mxfp4", ggml.GGML_TYPE_MXFP4, GGMLQuantizationType.MXFP4, 17, 32),
]


def datasets(rng):
    n = ROWS * COLS
    return [
        ("normal", rng.standard_normal(n).astype(np.float32)),
        ("student-t3", rng.standard_t(3, n).astype(np.float32)),
    ]


def ggml_quantize(gtype, x, block_bytes, block_weights):
    """x quantized by ggml, row by row (ROWS x COLS), as raw block bytes."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    out = np.zeros(x.size // block_weights * block_bytes, dtype=np.uint8)
    ggml.ggml_quantize_init(gtype)
    written = ggml.ggml_quantize_chunk(
        gtype,
        x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)),
        out.ctypes.data,
        0,
        ROWS,
        COLS,
        None,
    )
    if written != out.size:
        raise SystemExit(f"quantize oracle: ggml wrote {written} bytes, expected {out.size}")
    return out


def rel_rmse(x, y):
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    return float(np.sqrt(np.sum((x - y) ** 2) / np.sum(x ** 2)))


def main():
    example = os.environ["QMOE_EXAMPLE"]
    work = os.environ["QMOE_WORKDIR"]
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(SEED)
    failed = False
    for dname, x in datasets(rng):
        src = os.path.join(work, f"{dname}.f32")
        x.tofile(src)
        for name, gtype, qtype, nbytes, nweights in TYPES:
            dst = os.path.join(work, f"{dname}.{name}")
            subprocess.run([example, name, src, dst], check=True)
            ours = np.fromfile(dst, dtype=np.uint8)
            theirs = ggml_quantize(gtype, x, nbytes, nweights)
            if ours.size != theirs.size:
                print(f"quantize oracle: {name} {dname}: {ours.size} bytes from ours, "
                      f"{theirs.size} from ggml -- FAILED")
                failed = True
                continue
            e_ours = rel_rmse(x, np.asarray(dequantize(ours, qtype)).reshape(-1))
            e_ggml = rel_rmse(x, np.asarray(dequantize(theirs, qtype)).reshape(-1))
            ratio = e_ours / e_ggml if e_ggml > 0 else float("inf")
            same_blocks = int(np.sum(np.all(ours.reshape(-1, nbytes) == theirs.reshape(-1, nbytes), axis=1)))
            identical = bool(np.array_equal(ours, theirs))
            if identical:
                verdict = "bytes identical"
            elif ratio <= MAX_RATIO:
                verdict = f"rmse ratio <= {MAX_RATIO}"
            else:
                verdict = f"rmse ratio > {MAX_RATIO} -- FAILED"
                failed = True
            print(f"quantize oracle: {name} {dname:<10} rmse ours {e_ours:.6f} ggml {e_ggml:.6f} "
                  f"ratio {ratio:.4f}; {same_blocks}/{ours.size // nbytes} blocks identical: {verdict}")
    print("quantize oracle vs ggml-python: " + ("FAILED" if failed else "ok"))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
