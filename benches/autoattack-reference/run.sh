#!/usr/bin/env bash
# Standard AutoAttack, tailguard against the reference code, on the same model and the same images.
#
#   benches/autoattack-reference/run.sh CHECKPOINT CIFAR10_DATA [OUT] [TEST_PER_CLASS]
#
# Exports the checkpoint's weights (safetensors, PyTorch names), writes a seeded balanced test subset of
# TEST_PER_CLASS images per class (default 50) as a CIFAR binary archive, runs `tailguard eval --attacks
# clean,aa-lite,aa` on it and `compare.py` (the reference AutoAttack, `pip install torch safetensors pyautoattack`)
# on the same images, and prints both. TAILGUARD_BIN names a built program (default target/debug/tailguard).
set -euo pipefail
cd "$(dirname "$0")/../.."
checkpoint="$1"
data="$2"
out="${3:-target/autoattack-reference}"
per_class="${4:-50}"
bin="${TAILGUARD_BIN:-target/debug/tailguard}"
mkdir -p "$out"
"$bin" export --checkpoint "$checkpoint" --out "$out/model.safetensors" --force
"$bin" data --dataset cifar10 --data-dir "$data" --imbalance 1 --n-max 1 --export "$out/test.tar.gz" \
  --test-per-class "$per_class" --force --json > /dev/null
start=$(date +%s)
"$bin" eval --checkpoint "$checkpoint" --dataset cifar10 --data-dir "$out/test.tar.gz" --attacks clean,aa-lite,aa \
  --report "$out/tailguard" --force --json > "$out/tailguard.json"
echo "tailguard: $(( $(date +%s) - start )) s"
arch=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['arch'])" "$out/tailguard.json")
python3 benches/autoattack-reference/compare.py --weights "$out/model.safetensors" --arch "$arch" \
  --test "$out/test.tar.gz" --out "$out/reference.json"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
ours = json.loads((out / "tailguard.json").read_text())
ref = json.loads((out / "reference.json").read_text())
acc = {a["attack"]: a["accuracy"] for a in ours["attacks"]}
aa = next(a for a in ours["attacks"] if a["attack"] == "aa")
print(f"images {ref['images']}: clean tailguard {100 * acc['clean']:.2f} % / reference {100 * ref['clean_accuracy']:.2f} %")
print(f"standard AA robust accuracy: tailguard {100 * acc['aa']:.2f} % / reference {100 * ref['robust_accuracy']:.2f} %"
      f" (difference {100 * (acc['aa'] - ref['robust_accuracy']):+.2f} points); AA-lite {100 * acc['aa-lite']:.2f} %")
print("tailguard stages:", json.dumps(aa["stages"]))
print(f"reference time {ref['seconds']:.0f} s")
PY
