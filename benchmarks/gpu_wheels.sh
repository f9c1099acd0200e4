#!/usr/bin/env bash
# Fetch, on a machine with the package index, the wheels that benchmarks/gpu.sh needs on a bare
# CUDA machine: every runtime dependency of histolib that a stock PyTorch CUDA image (CPython
# 3.12, torch, torchvision, numpy, pandas, pyarrow, scikit-image, pillow, scipy, networkx,
# typer, rich, tifffile, pyyaml, packaging, certifi) lacks, for CPython 3.12 manylinux x86_64.
#
#   bash benchmarks/gpu_wheels.sh [--dest .whl]
#
# Then, on the GPU machine (no network needed): bash benchmarks/gpu.sh --wheels .whl
#
# pyvips publishes only a source distribution (pure Python: the compiled part is pyvips-binary's
# _libvips), so its wheel is built here with `pip wheel`; everything else is a published binary
# wheel. pyogrio (geopandas' file I/O through GDAL, 33 MB) is left out: histolib reads and writes
# GeoParquet through pyarrow and never calls geopandas.read_file/to_file. The script fails when a
# fetched wheel requires a package that is neither fetched nor in the image list above, or when
# the set exceeds 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."

dest=".whl"
while [ $# -gt 0 ]; do
    case "$1" in
        --dest) dest="$2"; shift 2 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
py="${PYTHON:-python3}"

# name==version: one version of each (two of one package stop the offline install)
binary=(
    "openslide-python==1.4.7" "openslide-bin==4.0.1.2"
    "pyvips-binary==8.18.7" "cffi==2.1.1" "pycparser==3.12"
    "shapely==2.2.0" "geopandas==1.2.0" "pyproj==3.8.0" "defusedxml==0.7.1"
)
source_only=("pyvips==3.2.0")

rm -rf "$dest"
mkdir -p "$dest"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 \
    --platform manylinux1_x86_64 -d "$dest" "${binary[@]}"
"$py" -m pip wheel -q --no-deps --no-binary=pyvips -w "$dest" "${source_only[@]}"

"$py" - "$dest" <<'PY'
import re, sys, zipfile
from pathlib import Path

dest = Path(sys.argv[1])
image = {
    "torch", "torchvision", "numpy", "pandas", "pyarrow", "scikit-image", "pillow", "scipy",
    "networkx", "typer", "rich", "tifffile", "pyyaml", "packaging", "certifi",
}
wheels = sorted(dest.glob("*.whl"))
fetched = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
missing, total = [], 0
for wheel in wheels:
    if not (wheel.name.endswith("-any.whl") or "manylinux" in wheel.name):
        sys.exit(f"error: {wheel.name} is not a Linux x86_64 or pure-Python wheel")
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode()
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:") or "extra ==" in line:
            continue
        if "platform_python_implementation == 'PyPy'" in line or 'python_version < "3' in line:
            continue
        name = re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0].lower()
        name = name.replace("_", "-")
        if name not in fetched and name not in image and name != "pyogrio":
            missing.append(f"{wheel.name} needs {name}")
    size = wheel.stat().st_size
    total += size
    print(f"  {size / 2**20:6.2f} MiB  {wheel.name}")
print(f"  {total / 2**20:6.2f} MiB  total, {len(wheels)} wheels in {dest}/")
if missing:
    sys.exit("error: not fetched and not in the image: " + "; ".join(missing))
if total > 60 * 2**20:
    sys.exit(f"error: the wheels take {total / 2**20:.1f} MiB, more than 60 MiB")
PY
