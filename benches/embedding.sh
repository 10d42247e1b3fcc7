#!/usr/bin/env bash
# The library as an outside project gets it, side by side with the program: the same configuration trained by
# `tailguard train` and by tests/outsider through `TrainConfig` (tailguard's Flex), and by tests/outsider built with
# Burn's published Flex (`--features published-flex`, what an embedder got while the kernels were a [patch]).
# Prints each run's epoch losses and training images per second (mean of the epochs, best of REPEATS runs).
# Usage: benches/embedding.sh [REPEATS] [--set KEY=VALUE ...]   (run from anywhere; builds what it needs)
set -euo pipefail
cd "$(dirname "$0")/.."
repeats=${1:-2}
shift || true
target="${CARGO_TARGET_DIR:-$PWD/target}"
profile=${PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
cargo build $flag -p tailguard
CARGO_TARGET_DIR="$target" cargo build $flag --manifest-path tests/outsider/Cargo.toml
cp "$target/$profile/tailguard-outsider" "$target/$profile/tailguard-outsider-tailguard-flex"
CARGO_TARGET_DIR="$target" cargo build $flag --manifest-path tests/outsider/Cargo.toml --features published-flex
cp "$target/$profile/tailguard-outsider" "$target/$profile/tailguard-outsider-published-flex"
sets=(optim.epochs=2 method.ce_epochs=1 data.n_max=200 model.arch=small-cnn optim.batch_size=64 "$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
summary() {
    python3 - "$1" <<'PY'
import json, sys
records = [json.loads(l) for l in open(sys.argv[1] + "/log.jsonl")]
print("losses", [r["loss"] for r in records], "images/s %.0f" % (sum(r["images_per_second"] for r in records) / len(records)))
PY
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) threads; profile $profile"
for run in $(seq "$repeats"); do
    "$target/$profile/tailguard" train --config configs/demo/taet.toml --out "$work/program-$run" \
        $(printf -- '--set %s ' "${sets[@]}") > /dev/null
    echo "program (tailguard train)        : $(summary "$work/program-$run")"
    "$target/$profile/tailguard-outsider-tailguard-flex" config configs/demo/taet.toml "$work/outsider-$run" "${sets[@]}" > /dev/null
    echo "outsider, tailguard_models::Flex : $(summary "$work/outsider-$run")"
    "$target/$profile/tailguard-outsider-published-flex" config configs/demo/taet.toml "$work/published-$run" "${sets[@]}" > /dev/null
    echo "outsider, burn::backend::Flex    : $(summary "$work/published-$run")"
done
