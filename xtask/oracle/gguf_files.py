"""GGUF files, both ways, against the GGML authors' `gguf` package (gguf==0.19.0).

Run by `cargo xtask oracle gguf` with QMOE_EXAMPLE (the oracle_gguf example binary of qmoe-gguf)
and QMOE_WORKDIR (a scratch directory) in the environment.

1. gguf writes, qmoe reads: files made with gguf.GGUFWriter (metadata of every value type, nested
   arrays; Q8_0 / F32 / F16 / BF16 tensors, random blocks of every other block type qmoe reads
   (`random_kquant`: Q4_K, Q5_K, Q6_K, the legacy formats, IQ4_NL, Q3_K, Q2_K, IQ4_XS,
   MXFP4 and the grid-based IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M); default and
   custom alignment) are
   dumped by qmoe; every key, type, value (floats by bit pattern), tensor name, type, dims, offset
   and size must match what GGUFReader sees, and `qmoe dequant FILE TENSOR --out X.npy` (the
   binary, built here with cargo) must equal gguf.quants.dequantize bit for bit, shape included.
2. qmoe writes, gguf reads: files made by qmoe's writer are read by GGUFReader; the same
   comparisons run, plus the tensor bytes GGUFReader returns against the bytes at qmoe's offsets.

Exits non-zero on the first mismatch; prints a one-line summary.
"""

import json
import os
import subprocess
import sys

import numpy as np
import gguf
from gguf import GGUFReader, GGUFWriter, GGUFValueType as VT, GGMLQuantizationType as QT

EXE = os.environ["QMOE_EXAMPLE"]
WORK = os.environ["QMOE_WORKDIR"]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
QMOE = os.path.join(ROOT, "target", "release", "qmoe")
RNG = np.random.default_rng(20260707)
stats = {"files": 0, "keys": 0, "tensors": 0, "elements": 0}


def fail(msg):
    print(f"gguf oracle: MISMATCH: {msg}", file=sys.stderr)
    sys.exit(1)


def run(*args, exe=None):
    r = subprocess.run([exe or EXE, *args], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{os.path.basename(exe or EXE)} {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def build_qmoe():
    """The `qmoe` binary itself: its `dequant` command is what is compared with gguf.quants."""
    r = subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "qmoe-cli"], cwd=ROOT)
    if r.returncode != 0:
        fail("cargo build --release -p qmoe-cli failed")


def bits(v, vtype):
    if vtype == VT.FLOAT32:
        return int(np.float32(v).view(np.uint32))
    if vtype == VT.FLOAT64:
        return int(np.float64(v).view(np.uint64))
    if vtype == VT.BOOL:
        return bool(v)
    return int(v)


def decode(parts, i, vtype):
    """One value from GGUFReader's flat `parts`, starting at parts[i]; returns (json, next i)."""
    vtype = VT(int(vtype))
    if vtype == VT.STRING:
        return {"t": 8, "v": bytes(parts[i + 1]).decode("utf-8")}, i + 2
    if vtype == VT.ARRAY:
        etype = int(parts[i][0])
        n = int(parts[i + 1][0])
        i += 2
        items = []
        for _ in range(n):
            v, i = decode(parts, i, etype)
            items.append(v if etype == VT.ARRAY else v["v"])
        return {"t": 9, "e": etype, "v": items}, i
    return {"t": int(vtype), "v": bits(parts[i][0], vtype)}, i + 1


def compare_file(path, check_bytes_against_raw):
    """Everything GGUFReader sees in `path` must equal what qmoe dumps and dequantizes."""
    ours = json.loads(run("dump", path))
    r = GGUFReader(path)
    theirs_kv = []
    for name, field in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's pseudo-fields for the header
        v, end = decode(field.parts, 3, field.types[0])
        if end != len(field.parts):
            fail(f"{path}: {name}: decoded {end} of {len(field.parts)} parts")
        theirs_kv.append({"key": name, "value": v})
    if ours["metadata"] != theirs_kv:
        for a, b in zip(ours["metadata"], theirs_kv):
            if a != b:
                fail(f"{path}: metadata differs: qmoe {a} vs gguf {b}")
        fail(f"{path}: metadata count qmoe {len(ours['metadata'])} vs gguf {len(theirs_kv)}")
    if ours["alignment"] != r.alignment or ours["data_offset"] != r.data_offset:
        fail(f"{path}: alignment/data offset qmoe {ours['alignment']}/{ours['data_offset']} vs gguf {r.alignment}/{r.data_offset}")
    if len(ours["tensors"]) != len(r.tensors):
        fail(f"{path}: {len(ours['tensors'])} tensors vs {len(r.tensors)}")
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    for o, t in zip(ours["tensors"], r.tensors):
        want = {"name": t.name, "type": int(t.tensor_type), "dims": [int(d) for d in t.shape],
                "offset": int(t.data_offset), "nbytes": int(t.n_bytes)}
        got = {k: o[k] for k in want}
        if got != want:
            fail(f"{path}: tensor info qmoe {got} vs gguf {want}")
        tbytes = np.asarray(t.data).view(np.uint8).reshape(-1)
        if check_bytes_against_raw:
            mine = raw[o["offset"]:o["offset"] + o["nbytes"]]
            if not np.array_equal(mine, tbytes):
                fail(f"{path}: {t.name}: bytes at qmoe's offset differ from GGUFReader's")
        if not o["supported"]:
            continue
        out = os.path.join(WORK, "t.npy")
        run("dequant", path, t.name, "--out", out, exe=QMOE)
        got = np.load(out)
        ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(t.shape))
        if got.shape != shape:
            fail(f"{path}: {t.name}: qmoe shape {got.shape} vs ggml dims reversed {shape}")
        ref = ref.reshape(shape)
        g, e = got.view(np.uint32), ref.view(np.uint32)
        if not np.array_equal(g, e):
            idx = np.argwhere(g != e)[:5]
            fail(f"{path}: {t.name} ({t.tensor_type.name}): {int((g != e).sum())} elements differ, "
                 f"first at {idx.tolist()}: qmoe {got[tuple(idx[0])]} vs gguf {ref[tuple(idx[0])]}")
        stats["elements"] += got.size
        stats["tensors"] += 1
    stats["keys"] += len(theirs_kv)
    stats["files"] += 1


def random_kquant(qtype, rows, cols):
    """Random blocks of `qtype` with finite f16 scales (garbage elsewhere is fine)."""
    bw, bb = gguf.constants.GGML_QUANT_SIZES[qtype]
    nblocks = rows * cols // bw
    b = RNG.integers(0, 256, size=(nblocks, bb), dtype=np.uint8)
    scale_fields = {QT.Q4_K: [0, 2], QT.Q6_K: [208], QT.Q4_0: [0], QT.Q4_1: [0, 2], QT.Q5_0: [0], QT.Q5_1: [0, 2], QT.Q5_K: [0, 2],
                    QT.IQ4_NL: [0], QT.Q3_K: [108],
                    QT.Q2_K: [80, 82], QT.IQ4_XS: [0],
                    QT.MXFP4: [], QT.IQ2_XXS: [0], QT.IQ2_XS: [0], QT.IQ2_S: [0],
                    QT.IQ3_XXS: [0], QT.IQ3_S: [0], QT.IQ1_S: [0], QT.IQ1_M: []}[qtype]
    for at in scale_fields:
        d = (RNG.uniform(1e-4, 0.05, size=nblocks) * RNG.choice([-1, 1], size=nblocks)).astype(np.float16)
        b[:, at:at + 2] = d.view(np.uint8).reshape(nblocks, 2)
    if qtype == QT.IQ1_M:
        # IQ1_M's f16 d is split: nibble t of its bits is the top nibble of the u16 word at byte
        # 48 + 2t (the low 12 bits hold the 3-bit scales and stay random).
        d = (RNG.uniform(1e-4, 0.05, size=nblocks) * RNG.choice([-1, 1], size=nblocks)).astype(np.float16)
        bits = d.view(np.uint16)
        for t in range(4):
            at = 48 + 2 * t
            word = b[:, at:at + 2].copy().view(np.uint16)[:, 0]
            word = (word & 0x0FFF) | (((bits >> (4 * t)) & 0xF) << 12)
            b[:, at:at + 2] = word.astype(np.uint16)[:, None].view(np.uint8)
    if qtype == QT.MXFP4:
        # The E8M0 exponent byte: half-scales 2^-10 .. 2^-1, as a real model's.
        b[:, 0] = RNG.integers(118, 128, size=nblocks, dtype=np.uint8)
    return b.reshape(rows, cols // bw * bb)


def gguf_written(path, alignment):
    w = GGUFWriter(path, arch="qwen3moe")
    if alignment != 32:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -7)
    w.add_uint16("t.u16", 65000)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 4294967295)
    w.add_int32("t.i32", -123456)
    w.add_float32("t.f32", 3.14159)
    w.add_bool("t.bool", True)
    w.add_string("t.string", "héllo ✓")
    w.add_uint64("t.u64", 2**64 - 2)
    w.add_int64("t.i64", -(2**62))
    w.add_float64("t.f64", 2.0 ** -1060)
    for vt, vals in [(VT.UINT8, [0, 255]), (VT.INT8, [-128, 5]), (VT.UINT16, [1, 2, 3]),
                     (VT.INT16, [-1]), (VT.UINT32, [7, 4000000000]), (VT.INT32, [-5, 5]),
                     (VT.FLOAT32, [0.25, -1e-30, 3e38]), (VT.BOOL, [True, False, True]),
                     (VT.STRING, ["a", "", "<0x0A>"]), (VT.UINT64, [2**63 + 1]),
                     (VT.INT64, [-(2**63)]), (VT.FLOAT64, [1e-310, -2.5])]:
        w.add_key_value(f"a.{vt.name.lower()}", vals, VT.ARRAY, sub_type=vt)
    w.add_key_value("a.nested", [[1, 2, 3], ["x", "yz"], [[0.5], [True, False]]], VT.ARRAY)
    w.add_token_list(["<|endoftext|>", "Ġthe", "!"])
    f32 = RNG.standard_normal((3, 256)).astype(np.float32)
    w.add_tensor("f32.weight", f32)
    w.add_tensor("f16.weight", RNG.standard_normal((2, 64)).astype(np.float16))
    bf = gguf.quants.quantize(RNG.standard_normal((2, 64)).astype(np.float32), QT.BF16)
    w.add_tensor("bf16.weight", bf, raw_dtype=QT.BF16)
    q8 = gguf.quants.quantize(RNG.standard_normal((4, 2, 96)).astype(np.float32) * 3, QT.Q8_0)
    w.add_tensor("q8_0.weight", q8, raw_dtype=QT.Q8_0)
    for qt in (QT.Q4_K, QT.Q5_K, QT.Q6_K, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.IQ4_NL, QT.Q3_K, QT.Q2_K, QT.IQ4_XS, QT.MXFP4,
               QT.IQ2_XXS, QT.IQ2_XS, QT.IQ2_S, QT.IQ3_XXS, QT.IQ3_S, QT.IQ1_S, QT.IQ1_M):
        w.add_tensor(f"{qt.name.lower()}.2d.weight", random_kquant(qt, 3, 512), raw_dtype=qt)
        w.add_tensor(f"blk.0.{qt.name.lower()}_exps.weight",
                     random_kquant(qt, 4 * 2, 256).reshape(4, 2, -1), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def write_fixture(out_dir):
    """fixtures/gguf/: a gguf-written file and what GGUFReader + gguf.quants make of it, so the
    Rust round-trip suite checks reading a reference-written file without Python."""
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "gguf-py-0.19.0.gguf")
    gguf_written(path, 64)
    r = GGUFReader(path)
    meta = []
    for name, field in r.fields.items():
        if not name.startswith("GGUF."):
            meta.append({"key": name, "value": decode(field.parts, 3, field.types[0])[0]})
    tensors = []
    for t in r.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).astype(np.float32).reshape(shape)
        npy = t.name.replace(".weight", "") + ".npy"
        np.save(os.path.join(out_dir, npy), ref)
        tensors.append({"name": t.name, "type": int(t.tensor_type), "dims": [int(d) for d in t.shape], "npy": npy})
    with open(os.path.join(out_dir, "gguf-py-0.19.0.json"), "w") as f:
        json.dump({"alignment": int(r.alignment), "data_offset": int(r.data_offset),
                   "metadata": meta, "tensors": tensors}, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--write-fixture":
        write_fixture(sys.argv[2])
        return
    build_qmoe()
    for align in (32, 64):
        p = os.path.join(WORK, f"gguf-written-{align}.gguf")
        gguf_written(p, align)
        compare_file(p, check_bytes_against_raw=True)
    for align in (32, 128):
        p = os.path.join(WORK, f"qmoe-written-{align}.gguf")
        run("write-sample", p, str(align))
        compare_file(p, check_bytes_against_raw=True)
    print(f"gguf oracle: OK — {stats['files']} files both ways (gguf→qmoe 2, qmoe→gguf 2), "
          f"{stats['keys']} metadata entries, {stats['tensors']} tensors, "
          f"{stats['elements']} dequantized elements bit-identical to gguf=={gguf.__version__ if hasattr(gguf, '__version__') else '0.19.0'}")


if __name__ == "__main__":
    main()
