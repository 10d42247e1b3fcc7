#!/usr/bin/env bash
# One command for both: `tailguard bench` and its PyTorch twin with the same arguments, then the ratios.
#
#   benches/pytorch/run.sh --arch resnet18 --batch 32 --apgd-iterations 20
#
# Common arguments: --arch --batch --workloads --iterations --warmup --apgd-iterations --matmul-size --classes.
# Environment: TAILGUARD (binary; default target/release/tailguard, built if missing, with CARGO_FEATURES),
# PYTHON (an interpreter with torch; default python3), OUT (report folder; default target/bench), TAILGUARD_ARGS
# (more arguments for `tailguard bench` only, e.g. `--device wgpu:cpu`).
# On a GPU machine: build here with `cargo build --release -p tailguard --features cuda`, copy the binary and this
# folder there, and run with TAILGUARD=path/to/tailguard.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
tailguard=${TAILGUARD:-$root/target/release/tailguard}
python=${PYTHON:-python3}
out=${OUT:-$root/target/bench}

if [ ! -x "$tailguard" ]; then
    # shellcheck disable=SC2086
    cargo build --release -p tailguard --manifest-path "$root/Cargo.toml" ${CARGO_FEATURES:-}
fi
if ! "$python" -c "import torch" 2>/dev/null; then
    echo "error: $python cannot import torch; install it (pip install torch) or point PYTHON at one that can" >&2
    exit 1
fi
mkdir -p "$out"
# shellcheck disable=SC2086
# --force replaces only a report tailguard wrote (a run into the same OUT again), as bench.py replaces its own.
"$tailguard" bench "$@" ${TAILGUARD_ARGS:-} --out "$out/tailguard.json" --force
"$python" -W ignore "$root/benches/pytorch/bench.py" "$@" --out "$out/pytorch.json"
"$python" "$root/benches/pytorch/compare.py" "$out/tailguard.json" "$out/pytorch.json" --markdown
