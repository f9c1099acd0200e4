#!/usr/bin/env bash
# The study of Boyd et al. (MICCAI 2022) on CAMELYON16 with histolib, step by step.
#
#   examples/camelyon16/run_study.sh DATA OUT              # the CAMELYON16 download (README.md)
#   examples/camelyon16/run_study.sh --synthetic DATA OUT  # make a synthetic DATA first and
#                                                          # run the same steps, tiny settings
#
# DATA holds the challenge's layout: DATA/images/<slide>.tif and DATA/annotations/<slide>.xml
# (ASAP XML, groups _0/_1 tumour and _2 exclusions). CAMELYON16 has no IHC: the study's IHC
# slides are read from DATA/ihc/ (or the folder in IHC_DIR). Every step is resumable: run the
# script again after an interruption and finished work is kept.
#
# Steps: 1 tile the H&E slides with their XML, 2 tile the IHC slides, 3 split, 4 build both
# cell libraries, 5 export to QuPath, 6 train (the authors' preset, the default), 7 evaluate,
# 8 the paper's experiment grid (examples/paper_grid.yaml). Set SKIP_GRID=1 to stop after 7.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

synthetic=0
if [[ "${1:-}" == "--synthetic" ]]; then
    synthetic=1
    shift
fi
if [[ $# -ne 2 ]]; then
    echo "usage: $0 [--synthetic] DATA OUT" >&2
    exit 2
fi
DATA="$1"
OUT="$2"
IHC_DIR="${IHC_DIR:-$DATA/ihc}"

# The paper's settings: 256 px tiles at 20x (0.5 um/px), balanced positive / negative tiles,
# 500 held-out tiles, the authors' training preset.
TILE_SIZE=256
N_EVAL=500
TRAIN_OPTIONS=()
GRID_OPTIONS=()
if ((synthetic)); then
    "$PYTHON" "$HERE/make_synthetic.py" "$DATA"
    # Tiny settings for a CPU check: the same commands on smaller tiles and networks.
    TILE_SIZE=128
    N_EVAL=8
    TRAIN_OPTIONS=(--epochs 1 --steps-per-epoch 2 --batch-size 2 --n-blocks 1 --ngf 8 --ndf 8
                   --workers 0 --device cpu)
    GRID_OPTIONS=(--tiny)
fi
mkdir -p "$OUT"

# 1. H&E: the slides that have contours (CAMELYON16's tumour slides; a normal slide has no
#    XML, and its tiles would be unlabelled). Groups _0 and _1 are tumour by default and the
#    _2 regions are cut out of them: tiles inside an exclusion are not positive.
he_slides=()
for xml in "$DATA"/annotations/*.xml; do
    slide="$DATA/images/$(basename "${xml%.xml}").tif"
    if [[ -f "$slide" ]]; then
        he_slides+=("$slide")
    fi
done
if ((${#he_slides[@]} == 0)); then
    echo "error: $DATA/annotations: no <slide>.xml with its slide in $DATA/images" >&2
    exit 1
fi
histolib tile "${he_slides[@]}" --out "$OUT/he" --annotations "$DATA/annotations" \
    --stain he --mpp 0.5 --size "$TILE_SIZE" --balance --no-progress

# 2. IHC: labels from the DAB stain, balanced.
histolib tile "$IHC_DIR" --out "$OUT/ihc" --stain ihc --mpp 0.5 --size "$TILE_SIZE" \
    --balance --no-progress

# 3. Hold out whole H&E slides in a train / val / test column of the manifest: test (10 % of
#    the tiles) for reporting, val (10 %) for selecting each model's best run of the grid.
#    `--by tile` instead is the authors' 10 % tile-level split.
histolib split "$OUT/he/tiles.parquet" --test-fraction 0.1 --val-fraction 0.1 --by slide

# 4. The cell libraries (the authors' pipeline): cancer cells inside the XML tumours.
histolib build-library "$OUT/he/tiles.parquet" --stain he --out "$OUT/library_he.parquet" \
    --overlays 4
histolib build-library "$OUT/ihc/tiles.parquet" --stain ihc --out "$OUT/library_ihc.parquet" \
    --overlays 4

# 5. QuPath: tiles, cells and the XML contours as GeoJSON, one file per slide (File > Import
#    objects from file). The exclusions come out as their own class, _2, the tumours holed.
histolib export qupath "$OUT/he/tiles.parquet" "$OUT/library_he.parquet" \
    --annotations "$DATA/annotations" --out "$OUT/qupath"
histolib export qupath "$OUT/ihc/tiles.parquet" "$OUT/library_ihc.parquet" --out "$OUT/qupath"

# 6. The region-guided CycleGAN with the authors' preset (the default). --resume continues
#    an interrupted run; a finished one is not trained again.
resume=()
if [[ -f "$OUT/runs/roi/checkpoints/latest.pt" ]]; then
    resume=(--resume)
fi
histolib train --he "$OUT/he/tiles.parquet" --ihc "$OUT/ihc/tiles.parquet" \
    --he-library "$OUT/library_he.parquet" --ihc-library "$OUT/library_ihc.parquet" \
    --out "$OUT/runs/roi" ${TRAIN_OPTIONS[@]+"${TRAIN_OPTIONS[@]}"} ${resume[@]+"${resume[@]}"}

# 7. DICE and balanced accuracy of the virtual IHC's DAB mask against the XML tumours.
histolib evaluate "$OUT/runs/roi" --tiles "$OUT/he/tiles.parquet" --n-tiles "$N_EVAL" \
    --out "$OUT/evaluation"

# 8. The paper's grid (6 models x residual blocks {6, 9} x lambda_cyc {1, 10, 30}) on this data:
#    each model's best run selected on val, reported on test; re-running resumes it.
if [[ "${SKIP_GRID:-0}" != 1 ]]; then
    "$PYTHON" "$HERE/study_grid.py" "$OUT" ${GRID_OPTIONS[@]+"${GRID_OPTIONS[@]}"} >"$OUT/grid.yaml"
    histolib experiment "$OUT/grid.yaml" --out "$OUT/experiment"
fi

echo "study done: $OUT (evaluation/table.md, experiment/table.md, qupath/, he/qc/)"
