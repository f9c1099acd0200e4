#!/usr/bin/env bash
# The GPU figures of histolib in one run (about 7 minutes on one GPU): prints them and writes
# OUT/<UTC time>/gpu_bench.json (each run in a fresh subfolder of --out).
#
#   bash benchmarks/gpu.sh [--out DIR] [--wheels DIR] [--dry-run]
#
#   check     every import the stages need (one line naming the missing ones), torch >= 2.3,
#             a CUDA GPU; nothing else starts when it fails
#   steps     paper-size training steps/s (roi, batch 8, 256 px, 6 blocks): fp32 (TF32 off),
#             TF32, bf16, bf16 + channels_last
#   data      synthetic training data (H&E with contours, IHC; 256 px tiles; both libraries)
#   train     a 1.5-minute `histolib train` at the paper's size with --amp, and its metrics
#   transfer  `histolib transfer`'s code on a 20,000 x 20,000 px synthetic slide with that
#             checkpoint: seconds, windows/s, peak GPU memory
#   demo      `histolib demo --device cuda`
# Beside each stage a sampler records the GPU's mean utilisation (NVML through pynvml, else
# nvidia-smi) and its sample count: the "GPU busy" figure of the stage.
#
# --wheels DIR installs the wheels of benchmarks/gpu_wheels.sh (fetched beforehand on a machine
# with the package index) into a temporary folder, without the network, and runs on the image's
# own torch. --dry-run runs every stage on the CPU at tiny sizes (how the tests check this file).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

out="gpu-bench"
wheels=""
dry=()
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --wheels) wheels="$2"; shift 2 ;;
        --dry-run) dry=(--dry-run); shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
py="${PYTHON:-python3}"

# A fresh run folder: a second run never meets the first one's training run.
mkdir -p "$out"
run="$out/$(date -u +%Y%m%dT%H%M%SZ)"
n=1
while ! mkdir "$run" 2>/dev/null; do run="$out/$(date -u +%Y%m%dT%H%M%SZ)-$n"; n=$((n + 1)); done
echo "== run folder: $run"

# This checkout's packages on the path, without installing it (histolib_cli is the cli/ folder).
site="$(mktemp -d "${TMPDIR:-/tmp}/histolib-gpu.XXXXXX")"
trap 'rm -rf "$site"' EXIT
ln -s "$repo/cli" "$site/histolib_cli"
if [ -n "$wheels" ]; then
    shopt -s nullglob
    files=("$wheels"/*.whl)
    shopt -u nullglob
    if [ ${#files[@]} -eq 0 ]; then
        echo "error: --wheels $wheels holds no .whl files (run benchmarks/gpu_wheels.sh)" >&2
        exit 1
    fi
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --target "$site" "${files[@]}"
fi
export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"

bench() { "$py" benchmarks/gpu_bench.py "$@" --work "$run" "${dry[@]}"; }

bench check  # one line and a non-zero exit when anything is missing: no stage starts

failed=()
# stage NAME EXPECTED: run one stage under a limit of EXPECTED / 0.7 s (30 % slack; a dry run
# on a busy CPU gets 10 minutes), with the utilisation sampler beside it; a failure is
# reported and the rest go on. Appends "name<TAB>limit<TAB>seconds<TAB>status" to stages.tsv.
stage() {
    local name="$1" expected="$2" limit status=ok
    limit=$(( (expected * 10 + 6) / 7 ))
    if [ ${#dry[@]} -gt 0 ]; then limit=600; fi
    echo "== $name (expected about ${expected} s, at most ${limit} s)"
    # the sampler is started directly (not through a function) so that $! is its own pid
    "$py" benchmarks/gpu_bench.py busy --stage "$name" --work "$run" "${dry[@]}" >/dev/null &
    local sampler=$! start=$SECONDS
    if ! timeout "$limit" "$py" benchmarks/gpu_bench.py "$name" --work "$run" "${dry[@]}"; then
        echo "== $name FAILED or ran out of time" >&2
        failed+=("$name")
        status=failed
    fi
    local took=$((SECONDS - start))
    kill -TERM "$sampler" 2>/dev/null || true
    wait "$sampler" || true
    printf '%s\t%s\t%s\t%s\n' "$name" "$limit" "$took" "$status" >>"$run/stages.tsv"
    echo "== $name: ${took} s of ${limit} s"
}

stage steps 45
stage data 60
stage train 125
stage transfer 90
stage demo 100
bench report --json "$run/gpu_bench.json"
if [ ${#failed[@]} -gt 0 ]; then
    echo "error: failed stages: ${failed[*]}" >&2
    exit 1
fi
