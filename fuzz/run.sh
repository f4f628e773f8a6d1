#!/usr/bin/env bash
# A bounded libFuzzer run of the GGUF parser without cargo-fuzz installed: the same flags
# `cargo fuzz build` passes (coverage instrumentation for the target only, not build scripts),
# seeded with the fixture written by gguf==0.19.0. Fails on any crash, panic, leak of more than
# 2 GB RSS, or a single allocation over 256 MB (a lying header must never cause one).
#
#   fuzz/run.sh [SECONDS]      (default 60; needs the nightly toolchain)
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
target="$(rustc -vV | sed -n 's/^host: //p')"
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions" \
    cargo +nightly build --release --quiet --target "$target" --bin gguf_parse
mkdir -p corpus/gguf_parse artifacts/gguf_parse
cp ../fixtures/gguf/gguf-py-0.19.0.gguf corpus/gguf_parse/
"target/$target/release/gguf_parse" corpus/gguf_parse -artifact_prefix=artifacts/gguf_parse/ \
    -max_total_time="$secs" -max_len=65536 -malloc_limit_mb=256 -rss_limit_mb=2048 2>&1 | tail -3
