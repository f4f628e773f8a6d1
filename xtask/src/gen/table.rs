//! The one table of quant types × kernel families × variants, the launch-parameter structs and
//! the constants the host and the device share. `cargo xtask gen` turns it into the `.gen.cuh`
//! instance files the kernels include and the `.gen.rs` files the launchers include; adding a
//! quant type to the kernels is one [`QTypeRow`] here (plus its header and reference).

/// A kernel family the table instantiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Whole-tensor dequantization to f32 / f16 / bf16 (`dequant.cu`).
    Dequant,
    /// Dense, expert-indexed and (same-type) fused gate+up f32 GEMV (`matvec.cu`).
    Matvec,
    /// The grouped MoE GEMM on int8 tensor cores (`gemm.cu`): gate+up with the SwiGLU epilogue
    /// and down, per expert tile of a `RoutePlan`; the type's header provides the int8 mma
    /// members (qtypes/common.cuh).
    Gemm,
}

/// One tensor element type.
#[derive(Debug, Clone, Copy)]
pub struct QTypeRow {
    /// Lowercase name, as in kernel names and `QType::name` ("q4_k").
    pub name: &'static str,
    /// The `qmoe_quant::QType` variant ("Q4_K").
    pub rust: &'static str,
    /// The traits struct of `qmoe-dequant/cuda/qtypes/<name>.cuh`, for every type the matvec
    /// kernels read: block formats, and float types read in kernel blocks of
    /// `MV_FLOAT_BLOCK_WEIGHTS` weights (F16, BF16). `None` for a float type without matvec
    /// kernels (F32).
    pub traits: Option<&'static str>,
    /// Float types: the device function that loads element i as f32. The dequant kernels of a
    /// row with `load` read element by element (any length), even when it also has `traits`.
    pub load: Option<&'static str>,
    /// The families this type is instantiated for.
    pub families: &'static [Family],
}

impl QTypeRow {
    /// Whether `f` is instantiated for this type.
    pub fn has(&self, f: Family) -> bool {
        self.families.contains(&f)
    }
}

/// Every type, in `QType` order of appearance in generated code.
pub const QTYPES: &[QTypeRow] = &[
    QTypeRow {
        name: "f32",
        rust: "F32",
        traits: None,
        load: Some("qmoe_load_f32"),
        families: &[Family::Dequant],
    },
    QTypeRow {
        name: "f16",
        rust: "F16",
        traits: Some("QtF16"),
        load: Some("qmoe_load_f16"),
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "bf16",
        rust: "BF16",
        traits: Some("QtBF16"),
        load: Some("qmoe_load_bf16"),
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q8_0",
        rust: "Q8_0",
        traits: Some("QtQ8_0"),
        load: None,
        families: &[Family::Dequant, Family::Matvec, Family::Gemm],
    },
    QTypeRow {
        name: "q4_k",
        rust: "Q4_K",
        traits: Some("QtQ4K"),
        load: None,
        families: &[Family::Dequant, Family::Matvec, Family::Gemm],
    },
    QTypeRow {
        name: "q6_k",
        rust: "Q6_K",
        traits: Some("QtQ6K"),
        load: None,
        families: &[Family::Dequant, Family::Matvec, Family::Gemm],
    },
    QTypeRow {
        name: "q4_0",
        rust: "Q4_0",
        traits: Some("QtQ4_0"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q4_1",
        rust: "Q4_1",
        traits: Some("QtQ4_1"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q5_0",
        rust: "Q5_0",
        traits: Some("QtQ5_0"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q5_1",
        rust: "Q5_1",
        traits: Some("QtQ5_1"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q5_k",
        rust: "Q5_K",
        traits: Some("QtQ5K"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "iq4_nl",
        rust: "IQ4_NL",
        traits: Some("QtIQ4NL"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "iq4_xs",
        rust: "IQ4_XS",
        traits: Some("QtIQ4XS"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q3_k",
        rust: "Q3_K",
        traits: Some("QtQ3K"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "q2_k",
        rust: "Q2_K",
        traits: Some("QtQ2K"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
    QTypeRow {
        name: "mxfp4",
        rust: "MXFP4",
        traits: Some("QtMXFP4"),
        load: None,
        families: &[Family::Dequant, Family::Matvec],
    },
];

/// Dequant output types: (name, C storage type, Rust `OutType` variant, outputs per thread of a
/// block format — one 16-byte store).
pub const DEQUANT_OUTS: &[(&str, &str, &str, u32)] = &[
    ("f32", "float", "F32", 4),
    ("f16", "uint16_t", "F16", 8),
    ("bf16", "uint16_t", "BF16", 8),
];

/// Matvec columns-per-staging-pass variants (suffix `_c<NC>`).
pub const MATVEC_NC: &[u32] = &[1, 4, 8];

/// Matvec activation precisions: (kernel-name infix, the device policy struct in `matvec.cu`,
/// the `qmoe_quant::Precision` variant). Every matvec type is instantiated for each: its header
/// provides the f32 item interface and the Q8_1 `dot_q8` (qtypes/common.cuh).
pub const MATVEC_PRECISIONS: &[(&str, &str, &str)] =
    &[("", "MvF32", "F32"), ("_q8_1", "MvQ8", "Q8_1")];

/// A field type of a launch-parameter struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// A device pointer (`CUdeviceptr` on the host), with its C pointee spelling.
    Ptr(&'static str),
    /// `uint64_t` / `u64`.
    U64,
    /// `uint32_t` / `u32`.
    U32,
}

impl Ty {
    /// Size and alignment in bytes (both sides: LP64 pointers, naturally aligned integers).
    pub fn size(self) -> usize {
        match self {
            Ty::Ptr(_) | Ty::U64 => 8,
            Ty::U32 => 4,
        }
    }
}

/// A `#[repr(C)]` launch-parameter struct shared by the host and the device.
#[derive(Debug, Clone, Copy)]
pub struct ParamStruct {
    /// The type name on both sides.
    pub name: &'static str,
    /// One line on what it launches.
    pub doc: &'static str,
    /// (field, type, doc), in layout order.
    pub fields: &'static [(&'static str, Ty, &'static str)],
}

/// One generated pair of files: the device side (`.gen.cuh`) and the host side (`.gen.rs`).
#[derive(Debug, Clone, Copy)]
pub struct Unit {
    /// The kernel family.
    pub family: Family,
    /// `crates/<crate>/cuda/<stem>.gen.cuh`.
    pub cuh: &'static str,
    /// `crates/<crate>/src/<stem>.gen.rs`.
    pub rs: &'static str,
    /// The launch-parameter structs.
    pub params: &'static [ParamStruct],
    /// Shared integer constants: (C macro name, Rust const name, value, doc).
    pub consts: &'static [(&'static str, &'static str, u32, &'static str)],
    /// Kernels that exist once, not per type: (entry name, its parameter struct). Listed in
    /// `KERNELS` with the instances.
    pub singles: &'static [(&'static str, &'static str)],
}

/// Dequant's generated files.
pub const DEQUANT: Unit = Unit {
    family: Family::Dequant,
    cuh: "crates/qmoe-dequant/cuda/dequant.gen.cuh",
    rs: "crates/qmoe-dequant/src/launch.gen.rs",
    params: &[ParamStruct {
        name: "DequantParams",
        doc: "Every dequant kernel: a whole tensor's bytes in, `groups` threads' outputs.",
        fields: &[
            ("input", Ty::Ptr("const uint8_t"), "the tensor's bytes"),
            (
                "out",
                Ty::Ptr("void"),
                "numel outputs of the kernel's output type",
            ),
            (
                "groups",
                Ty::U64,
                "threads with work: numel / outputs per thread",
            ),
        ],
    }],
    consts: &[("QMOE_DEQUANT_THREADS", "THREADS", 256, "threads per block")],
    singles: &[],
};

/// Matvec's generated files.
pub const MATVEC: Unit = Unit {
    family: Family::Matvec,
    cuh: "crates/qmoe-matvec/cuda/matvec.gen.cuh",
    rs: "crates/qmoe-matvec/src/launch.gen.rs",
    params: &[
        ParamStruct {
            name: "MvDenseParams",
            doc: "Dense y[c, R] = W[R, K] · x[c, K] for c < B.",
            fields: &[
                ("w", Ty::Ptr("const uint8_t"), "the [R, K] weights"),
                ("x", Ty::Ptr("const float"), "B vectors of K"),
                ("y", Ty::Ptr("float"), "B vectors of R"),
                ("rows", Ty::U32, "R"),
                ("row_bytes", Ty::U32, "bytes of one row"),
                ("k", Ty::U32, "K"),
                ("glog", Ty::U32, "log2 of the lanes per row"),
                ("tile_rows", Ty::U32, "rows per block tile T"),
                ("b", Ty::U32, "B"),
            ],
        },
        ParamStruct {
            name: "MvIndexedParams",
            doc: "Expert-indexed y[t, R] = W[ids[t]] · x[t / k or t] for every task t < n_tasks, \
                  optionally with the MoE combine in its tail.",
            fields: &[
                ("w", Ty::Ptr("const uint8_t"), "the [E, R, K] weights"),
                ("ids", Ty::Ptr("const uint32_t"), "n_tasks expert ids"),
                ("x", Ty::Ptr("const float"), "activation vectors of K"),
                ("y", Ty::Ptr("float"), "n_tasks vectors of R"),
                (
                    "resid",
                    Ty::Ptr("const float"),
                    "combine tail: the residual [n_tasks / top_k, R], or null for none",
                ),
                (
                    "wts",
                    Ty::Ptr("const float"),
                    "combine tail: the routing weights [n_tasks]",
                ),
                (
                    "out",
                    Ty::Ptr("float"),
                    "combine tail: resid + sum over slots of wts * y",
                ),
                (
                    "ffn",
                    Ty::Ptr("float"),
                    "combine tail: the sum over slots of wts * y",
                ),
                (
                    "counters",
                    Ty::Ptr("unsigned int"),
                    "combine tail: one counter per row tile, zero between launches",
                ),
                ("expert_bytes", Ty::U64, "bytes of one expert"),
                ("n_experts", Ty::U32, "E"),
                ("rows", Ty::U32, "R"),
                ("row_bytes", Ty::U32, "bytes of one row"),
                ("k", Ty::U32, "K"),
                ("glog", Ty::U32, "log2 of the lanes per row"),
                ("tile_rows", Ty::U32, "rows per block tile T"),
                ("n_tasks", Ty::U32, "tokens x slots"),
                ("top_k", Ty::U32, "slots per token"),
                (
                    "x_per_slot",
                    Ty::U32,
                    "1: x[t] per task; 0: x[t / top_k] per token",
                ),
            ],
        },
        ParamStruct {
            name: "MvGateUpParams",
            doc: "Fused act[t, I] = swiglu(Wg[e] · x[t / k], Wu[e] · x[t / k]), e = ids[t]; gate \
                  and up share one type and shape.",
            fields: &[
                ("wg", Ty::Ptr("const uint8_t"), "the [E, I, H] gate weights"),
                ("wu", Ty::Ptr("const uint8_t"), "the [E, I, H] up weights"),
                ("ids", Ty::Ptr("const uint32_t"), "n_tasks expert ids"),
                ("x", Ty::Ptr("const float"), "tokens' vectors of H"),
                ("act", Ty::Ptr("float"), "n_tasks vectors of I"),
                (
                    "expert_bytes",
                    Ty::U64,
                    "bytes of one expert of either matrix",
                ),
                ("row_bytes", Ty::U32, "bytes of one row of either matrix"),
                ("n_experts", Ty::U32, "E"),
                ("rows", Ty::U32, "I"),
                ("k", Ty::U32, "H"),
                ("glog", Ty::U32, "log2 of the lanes per row"),
                ("tile_rows", Ty::U32, "rows per block tile T"),
                ("n_tasks", Ty::U32, "tokens x slots"),
                ("top_k", Ty::U32, "slots per token"),
            ],
        },
        ParamStruct {
            name: "Q8_1Params",
            doc: "Q8_1 quantization of `blocks` blocks of 32 activations (the matvec Q8_1 \
                  path's staging, as a kernel of its own).",
            fields: &[
                ("x", Ty::Ptr("const float"), "32 x blocks activations"),
                ("q", Ty::Ptr("int8_t"), "32 x blocks int8 values"),
                ("ds", Ty::Ptr("float2"), "blocks (d, s) pairs"),
                ("blocks", Ty::U32, "Q8_1 blocks"),
            ],
        },
    ],
    consts: &[
        ("MV_THREADS", "THREADS", 256, "threads per block"),
        (
            "MV_MAX_TASKS",
            "MAX_TASKS",
            256,
            "largest tokens x slots of one indexed launch (the block's task list)",
        ),
        (
            "MV_MAX_PASSES",
            "MAX_PASSES",
            8,
            "most row passes a block tile is cut into",
        ),
        (
            "MV_FLOAT_BLOCK_WEIGHTS",
            "FLOAT_BLOCK_WEIGHTS",
            32,
            "weights of the kernel block a float type (a row with traits and load) is read in: \
             one Q8_1 block; rows must be whole kernel blocks",
        ),
    ],
    singles: &[("qmoe_quantize_q8_1", "Q8_1Params")],
};

/// The grouped GEMM's generated files.
pub const GEMM: Unit = Unit {
    family: Family::Gemm,
    cuh: "crates/qmoe-gemm/cuda/gemm.gen.cuh",
    rs: "crates/qmoe-gemm/src/launch.gen.rs",
    params: &[
        ParamStruct {
            name: "GemmParams",
            doc: "One grouped GEMM over a RoutePlan's tiles: gate+up (act[s, R] = swiglu(Wg[e] · \
                  x[s / top_k], Wu[e] · x[s / top_k])) or down (y[s, R] = W[e] · act[s]), for \
                  every slot s of every tile of expert e.",
            fields: &[
                (
                    "w0",
                    Ty::Ptr("const uint8_t"),
                    "the [E, R, K] (gate) weights",
                ),
                (
                    "w1",
                    Ty::Ptr("const uint8_t"),
                    "gate+up: the [E, R, K] up weights; down: unused",
                ),
                (
                    "x",
                    Ty::Ptr("const float"),
                    "activation vectors of K: one per token (gate+up) or per slot (down)",
                ),
                (
                    "perm",
                    Ty::Ptr("const uint32_t"),
                    "the plan's slot per padded row",
                ),
                (
                    "tiles",
                    Ty::Ptr("const uint32_t"),
                    "the plan's (expert, first padded row) per tile",
                ),
                ("out", Ty::Ptr("float"), "n_slots vectors of R"),
                (
                    "expert_bytes",
                    Ty::U64,
                    "bytes of one expert of each matrix",
                ),
                ("row_bytes", Ty::U32, "bytes of one row"),
                ("n_experts", Ty::U32, "E"),
                ("rows", Ty::U32, "R"),
                ("k", Ty::U32, "K"),
                ("n_slots", Ty::U32, "B x top_k"),
                (
                    "x_div",
                    Ty::U32,
                    "slot s reads activation vector s / x_div (top_k for gate+up, 1 for down)",
                ),
            ],
        },
        ParamStruct {
            name: "GemmCombineParams",
            doc: "The MoE combine: ffn[t, R] = sum over slots j (ascending) of wts[t, j] * \
                  y[t, j], out = resid + ffn.",
            fields: &[
                (
                    "y",
                    Ty::Ptr("const float"),
                    "the [B, top_k, R] per-slot outputs",
                ),
                (
                    "wts",
                    Ty::Ptr("const float"),
                    "the [B, top_k] routing weights",
                ),
                (
                    "ids",
                    Ty::Ptr("const uint32_t"),
                    "the [B, top_k] expert ids",
                ),
                ("resid", Ty::Ptr("const float"), "the [B, R] residual"),
                ("ffn", Ty::Ptr("float"), "[B, R]: the weighted sum"),
                ("out", Ty::Ptr("float"), "[B, R]: resid + ffn"),
                ("n_tokens", Ty::U32, "B"),
                ("top_k", Ty::U32, "slots per token"),
                ("rows", Ty::U32, "R"),
                (
                    "n_experts",
                    Ty::U32,
                    "E: a slot whose id is >= E makes its token NaN",
                ),
            ],
        },
        ParamStruct {
            name: "GemmPeakParams",
            doc: "The int8 mma peak micro-bench: every warp runs `iters` rounds of independent \
                  m16n8k32 mma chains on register operands.",
            fields: &[
                (
                    "out",
                    Ty::Ptr("int"),
                    "one int per thread, so the chains are not optimised away",
                ),
                ("iters", Ty::U32, "rounds per warp"),
                ("seed", Ty::U32, "operand bits (any value)"),
            ],
        },
    ],
    consts: &[
        ("GM_THREADS", "THREADS", 256, "threads per block (8 warps)"),
        (
            "GM_TILE_M",
            "TILE_M",
            32,
            "token slots per tile: the RoutePlan's tile height",
        ),
        (
            "GM_TILE_ROWS",
            "TILE_ROWS",
            128,
            "output rows per block: 16 per warp, one m16 fragment",
        ),
        (
            "GM_K_CHUNK",
            "K_CHUNK",
            256,
            "activations staged per pass, in Q8_1 blocks of 32",
        ),
    ],
    singles: &[
        ("qmoe_gemm_combine", "GemmCombineParams"),
        ("qmoe_gemm_mma_peak", "GemmPeakParams"),
    ],
};

/// Every generated unit.
pub const UNITS: &[Unit] = &[DEQUANT, MATVEC, GEMM];
