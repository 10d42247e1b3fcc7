#!/usr/bin/env bash
# AutoAttack, tailguard against the reference code, on the same model and the same images.
#
#   benches/autoattack-reference/run.sh CHECKPOINT CIFAR10_DATA [OUT] [TEST_PER_CLASS]
#   NORM=l2 benches/autoattack-reference/run.sh ...                   # standard AutoAttack in the L2 ball (eps 0.5)
#   NORM=l2 VERSION=lite benches/autoattack-reference/run.sh ...      # APGD-CE + APGD-T in the L2 ball
#   VERSION=rand benches/autoattack-reference/run.sh ...               # the rand version (EOT) against aa-rand
#   VERSION=plus benches/autoattack-reference/run.sh ...               # the plus version (AA+) against aa-plus
#
# Exports the checkpoint's weights (safetensors, PyTorch names), writes a seeded balanced test subset of
# TEST_PER_CLASS images per class (default 50) as a CIFAR binary archive, runs `tailguard eval` on it (standard:
# `--attacks clean,aa-lite,aa`; lite: `clean,aa-lite`; rand: `clean,aa-rand`; plus: `clean,aa-plus`) and
# `compare.py` (the reference
# AutoAttack, `pip install torch safetensors pyautoattack`) on the same images with the same attacks, and prints
# both. TAILGUARD_BIN names a built program (default: the release build, built here: the times are compared with
# PyTorch's optimised kernels, and a dev build, whose program crate CI compiles unoptimised, ran Square 30x slower);
# NORM is linf (default) or l2, EPS the budget (default 8/255 in linf, 0.5 in l2), VERSION standard (default), lite,
# rand or plus.
set -euo pipefail
cd "$(dirname "$0")/../.."
checkpoint="$1"
data="$2"
out="${3:-target/autoattack-reference}"
per_class="${4:-50}"
bin="${TAILGUARD_BIN:-}"
if [ -z "$bin" ]; then cargo build -q --release -p tailguard; bin=target/release/tailguard; fi
mkdir -p "$out"
"$bin" export --checkpoint "$checkpoint" --out "$out/model.safetensors" --force
"$bin" data --dataset cifar10 --data-dir "$data" --imbalance 1 --n-max 1 --export "$out/test.tar.gz" \
  --test-per-class "$per_class" --force --json > /dev/null
start=$(date +%s)
norm="${NORM:-linf}"
version="${VERSION:-standard}"
case "$norm" in
  linf) eps="${EPS:-8/255}"; ref_norm=Linf ;;
  l2) eps="${EPS:-0.5}"; ref_norm=L2 ;;
  *) echo "error: NORM must be linf or l2, got '$norm'" >&2; exit 2 ;;
esac
case "$version" in
  standard) attacks=clean,aa-lite,aa; ours=aa; ref_attacks=standard; ref_version=standard ;;
  lite) attacks=clean,aa-lite; ours=aa-lite; ref_attacks=apgd-ce,apgd-t; ref_version=standard ;;
  rand) attacks=clean,aa-rand; ours=aa-rand; ref_attacks=standard; ref_version=rand ;;
  plus) attacks=clean,aa-plus; ours=aa-plus; ref_attacks=standard; ref_version=plus ;;
  *) echo "error: VERSION must be standard, lite, rand or plus, got '$version'" >&2; exit 2 ;;
esac
"$bin" eval --checkpoint "$checkpoint" --dataset cifar10 --data-dir "$out/test.tar.gz" --attacks "$attacks" \
  --norm "$norm" --eps "$eps" --report "$out/tailguard-$norm-$version" --force --json > "$out/tailguard.json"
echo "tailguard: $(( $(date +%s) - start )) s"
arch=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['arch'])" "$out/tailguard.json")
python3 benches/autoattack-reference/compare.py --weights "$out/model.safetensors" --arch "$arch" \
  --test "$out/test.tar.gz" --norm "$ref_norm" --eps "$eps" --version "$ref_version" --attacks "$ref_attacks" \
  --out "$out/reference.json"
python3 - "$out" "$ours" <<'PY'
import json, sys, pathlib
out, ours_name = pathlib.Path(sys.argv[1]), sys.argv[2]
ours = json.loads((out / "tailguard.json").read_text())
ref = json.loads((out / "reference.json").read_text())
acc = {a["attack"]: a["accuracy"] for a in ours["attacks"]}
print(f"{ref['norm']} eps {ref['eps']:.4f}, reference attacks {ref['attacks']} ({ref['version']} version)")
print(f"images {ref['images']}: clean tailguard {100 * acc['clean']:.2f} % / reference {100 * ref['clean_accuracy']:.2f} %")
print(f"robust accuracy: tailguard {ours_name} {100 * acc[ours_name]:.2f} % / reference {100 * ref['robust_accuracy']:.2f} %"
      f" (difference {100 * (acc[ours_name] - ref['robust_accuracy']):+.2f} points)")
stages = next(a for a in ours["attacks"] if a["attack"] == ours_name).get("stages")
if stages:
    print("tailguard stages:", json.dumps(stages))
print(f"reference time {ref['seconds']:.0f} s")
PY
