#!/usr/bin/env bash
# CPU-scale comparison of the methods on real CIFAR-10-LT images (the shared JPEGs), same budget for every method:
# long-tailed rho 10 with a head class of 1,000 images (3,984 training images, 10 % held out for validation),
# small CNN, 8 epochs, batch 128, PGD-3 training attack (eps 8/255, step 2/255), then clean / PGD-20 / AA-lite on a
# seeded 1,000-image subset of the balanced test set. Results: docs/benchmarks.md.
#
# Usage: benches/cpu-comparison.sh [CIFAR10_IMAGE_FOLDER] [OUT]
# The image folder holds train/<class>/*.jpg and test/<class>/*.jpg (the tests unpack ../shared/datasets into
# target/tmp/cifar10-jpeg).
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-target/tmp/cifar10-jpeg}"
out="${2:-target/cpu-comparison}"
[ -d "$data/train" ] || { echo "error: $data/train not found (run cargo test once, or pass the folder)" >&2; exit 1; }
cargo build -q -p tailguard
bin=target/debug/tailguard
common=(--set "data.data_dir=$data" --set data.n_max=1000 --set optim.epochs=8 --set optim.batch_size=128
        --set attack.steps=3)
for method in natural pgd-at at-bsl taet robustlt-at-bsl; do
  extra=()
  [ "$method" = taet ] && extra=(--set method.ce_epochs=3)
  rm -rf "$out/$method"
  "$bin" train --config "configs/cpu/$method-small.toml" "${common[@]}" "${extra[@]}" --out "$out/$method" 2>&1 \
    | tr '\r' '\n' | grep -E "^(epoch|training|done)"
  "$bin" eval --checkpoint "$out/$method/last" --dataset cifar10 --data-dir "$data" \
    --attacks clean,pgd20,aa-lite --limit 1000 --report "$out/$method/report" 2>&1 | tr '\r' '\n' | grep -E "accuracy|wrote"
done
