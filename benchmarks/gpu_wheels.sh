#!/usr/bin/env bash
# The wheels that benchmarks/gpu_check.py needs on a GPU machine that has only PyTorch, Triton, numpy, pandas, scipy,
# matplotlib and tqdm and no network (docs/gpu.md).
#
#   benchmarks/gpu_wheels.sh [DEST]            here, with PyPI: download them into DEST (default wheels/, ~25 MB)
#   benchmarks/gpu_wheels.sh --install [DEST]  there, offline: install them into .gpu-site/ (the machine's own
#                                              environment is left as it is); then run
#   PYTHONPATH=$PWD/.gpu-site python3 benchmarks/gpu_check.py OUT
#
# Where installing into the machine's environment is allowed, instead:
#   pip install --no-index --find-links wheels/ -r benchmarks/gpu_requirements.txt
#   pip install --no-index --find-links wheels/ --no-deps -e .    # its build backend, setuptools, is a wheel here
#
# The device's Python is not known in advance, so compiled wheels (PyYAML, pydantic-core, orjson, ...) come for each
# of PYTHON_VERSIONS (default 3.11 to 3.14; pytest and hypothesis as pinned have none for 3.10), for ARCH (default
# x86_64). flash-linear-attention itself (fla.layers, fla.models) does not travel: it requires transformers, and
# archbench uses only fla-core's kernels (fla.ops).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

if [ "${1:-}" = "--install" ]; then
  dest=${2:-wheels}
  "$python" -m pip install --quiet --no-index --find-links "$dest" --target .gpu-site \
    -r benchmarks/gpu_requirements.txt
  echo "gpu_wheels.sh: installed into $PWD/.gpu-site for $("$python" --version); run with PYTHONPATH=$PWD/.gpu-site"
  exit 0
fi

dest=${1:-wheels}
versions=${PYTHON_VERSIONS:-3.11 3.12 3.13 3.14}
arch=${ARCH:-x86_64}
mkdir -p "$dest"
# Every requirement but antlr4, markers dropped (pip would judge them by this interpreter, not the target one), and
# setuptools for `pip install -e .`. A package is fetched for each Python version unless a pure-Python wheel of it is
# already there; a gap is reported, not fatal.
reqs=$(sed -e 's/#.*//' -e 's/;.*//' -e 's/[[:space:]]*$//' benchmarks/gpu_requirements.txt | grep -v '^antlr4' | grep .)
missing=()
for req in $reqs setuptools==84.2.1; do
  name=$(echo "${req%%[=<>]*}" | tr 'A-Z-' 'a-z_')
  for v in $versions; do
    if compgen -G "$dest/${name}-*-none-any.whl" > /dev/null; then
      break
    fi
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$dest" --python-version "$v" \
      --implementation cp --platform "manylinux_2_28_$arch" --platform "manylinux_2_17_$arch" \
      --platform "manylinux2014_$arch" "$req" 2> /dev/null || missing+=("$req for Python $v")
  done
done
# antlr4-python3-runtime 4.9.3, which hydra-core 1.3 pins, is published as a source archive only: build its wheel.
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$dest" antlr4-python3-runtime==4.9.3
for m in "${missing[@]}"; do echo "gpu_wheels.sh: no wheel of $m" >&2; done
echo "gpu_wheels.sh: $(ls "$dest" | wc -l) wheels, $(du -sh "$dest" | cut -f1), in $dest"
