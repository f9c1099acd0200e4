#!/usr/bin/env bash
# The GPU figures of histolib in one run (under 8 minutes on one GPU): prints them and writes
# OUT/gpu_bench.json.
#
#   bash benchmarks/gpu.sh [--out DIR] [--dry-run]
#
#   1. paper-size training steps/s (roi, batch 8, 256 px, 6 blocks) in fp32, fp32 +
#      channels_last, AMP (bf16 from compute capability 8.0, else fp16) and AMP + channels_last
#   2. synthetic training data (H&E with contours, IHC; 256 px tiles; both cell libraries)
#   3. a 2-minute `histolib train` at the paper's size with --amp, and its metrics
#   4. `histolib transfer`'s code on a 20,000 x 20,000 px synthetic slide with that checkpoint:
#      seconds, windows/s, peak GPU memory, GPU busy fraction
#   5. `histolib demo --device cuda`
#
# Needs histolib installed with a CUDA build of torch (pip install -e ".[all]"). Without a GPU
# it stops at once with a message; --dry-run runs every step on the CPU at tiny sizes (about a
# minute), which is how the tests check this script.
set -euo pipefail
cd "$(dirname "$0")/.."

out="gpu-bench"
dry=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --dry-run) dry=(--dry-run); shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$out"
bench() { python benchmarks/gpu_bench.py "$@" --work "$out" "${dry[@]}"; }

bench check  # fails fast without a GPU (unless --dry-run)

failed=()
# step NAME SECONDS: run one step under a time limit (on the GPU; a dry run on a busy CPU gets
# 10 minutes a step); a failure is reported, the rest go on.
step() {
    local name="$1" limit="$2"
    if [ ${#dry[@]} -gt 0 ]; then limit=600; fi
    echo "== $name (at most ${limit} s)"
    local start=$SECONDS
    if ! timeout "$limit" python benchmarks/gpu_bench.py "$name" --work "$out" "${dry[@]}"; then
        echo "== $name FAILED or ran out of time" >&2
        failed+=("$name")
    fi
    echo "== $name: $((SECONDS - start)) s"
}

step steps 70
step data 60
step train 145
step transfer 85
step demo 105
bench report --json "$out/gpu_bench.json"
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: failed steps: ${failed[*]}" >&2
    exit 1
fi
