#!/usr/bin/env bash
# Builds datasets/cifar10-lt-mini.tar.gz, the embedded demo dataset, from the CIFAR-10 JPEG archives in
# ../shared/datasets (or $TAILGUARD_SHARED/datasets). See datasets/README.md for what it holds.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${TAILGUARD_SHARED:-../shared}/datasets"
for archive in cifar10-jpeg-train.tar cifar10-jpeg-test.tar; do
  [ -f "$shared/$archive" ] || { echo "error: $shared/$archive not found" >&2; exit 1; }
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar -xf "$shared/cifar10-jpeg-train.tar" -C "$work"
tar -xf "$shared/cifar10-jpeg-test.tar" -C "$work"
cargo run -q -p tailguard -- data --dataset cifar10 --data-dir "$work" \
  --imbalance 10 --n-max 500 --seed 0 \
  --export datasets/cifar10-lt-mini.tar.gz --test-per-class 100
ls -l datasets/cifar10-lt-mini.tar.gz
