#!/usr/bin/env bash
# CPU-scale study of the methods on real CIFAR-10-LT (the shared JPEGs), one budget for every method, several seeds,
# each run evaluated with its raw weights and with its weight average (EMA).
#
#   EPOCHS=20 benches/cpu-study.sh [CIFAR10_IMAGE_FOLDER] [OUT]   # results in OUT/study.md (OUT: target/cpu-study-eEPOCHS)
#
# Budget: CIFAR-10-LT rho 10 with a head class of 1,000 images (3,984 training images, shuffled batches as in the
# papers, no validation split: the last epoch is evaluated), small CNN (width 16), EPOCHS epochs (10, 20 or 40; 10
# unless set), batch 128, SGD lr 0.05 with cosine decay, crop + flip; training attack PGD-3, eps 8/255, step 3/255 for
# every method. Scaled from the papers: TAET spends 40 % of the epochs on clean cross-entropy (40 of 100) with its
# official weights 0.1; RobustLT keeps alpha 0.3 and beta 0.8 (full budget after 80 % of the epochs). Every quirk keeps
# its reference-code default. Every run keeps a weight average ([ema], decay 0.9995 with its warm-up): it does not
# change the raw weights' training, so one run gives both rows. Evaluation: clean, PGD-20 and AA-lite at eps 8/255 on a
# seeded 500-image subset of the balanced test set, of the raw weights (report-raw/) and of the average (report-ema/).
#
# The image folder holds train/<class>/*.jpg and test/<class>/*.jpg (`cargo test --test real_cifar10` unpacks
# ../shared/datasets into target/tmp/cifar10-jpeg). SEEDS and METHODS override the defaults below; TAILGUARD_BIN
# names a built program to use instead of building one. Resumable: a finished run is skipped, an interrupted one
# continues from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${EPOCHS:-10}"
data="${1:-target/tmp/cifar10-jpeg}"
out="${2:-target/cpu-study-e$epochs}"
seeds=(${SEEDS:-0 1 2})
methods=(${METHODS:-natural pgd-at at-bsl taet robustlt-at-bsl})
[ -d "$data/train" ] || { echo "error: $data/train not found (run cargo test --test real_cifar10 once, or pass the folder)" >&2; exit 1; }
# TAILGUARD_BIN runs a copy of the program, so a rebuild during the hours does not change it mid-study.
bin="${TAILGUARD_BIN:-}"
if [ -z "$bin" ]; then cargo build -q -p tailguard; bin=target/debug/tailguard; fi
common=(--set "data.data_dir=$data" --set data.n_max=1000 --set data.validation_fraction=0.0
        --set "optim.epochs=$epochs" --set optim.batch_size=128 --set optim.lr=0.05
        --set attack.steps=3 --set attack.step_size=3/255 --set ema.decay=0.9995)
mkdir -p "$out"
for seed in "${seeds[@]}"; do
  for method in "${methods[@]}"; do
    run="$out/$method-seed$seed"
    if [ -f "$run/report-ema/report.json" ]; then continue; fi  # finished earlier: the study resumes
    extra=()
    [ "$method" = taet ] && extra=(--set "method.ce_epochs=$(( epochs * 4 / 10 ))")
    start=$(date +%s)
    if [ -f "$run/last/train_state.json" ]; then
      "$bin" train --resume "$run" --json >> "$run.train.jsonl"
    else
      "$bin" train --config "configs/cpu/$method-small.toml" "${common[@]}" "${extra[@]}" --set "seed=$seed" \
        --out "$run" --force --json > "$run.train.jsonl"
    fi
    trained=$(date +%s)
    for weights in raw ema; do
      "$bin" eval --checkpoint "$run/last" --weights "$weights" --dataset cifar10 --data-dir "$data" \
        --attacks clean,pgd20,aa-lite --limit 500 --seed "$seed" --report "$run/report-$weights" --force 2>&1 \
        | tr '\r' '\n' | grep -E "accuracy" | sed "s/^/$weights /"
    done
    echo "$method seed $seed ($epochs epochs): training $((trained - start)) s, evaluation $(( $(date +%s) - trained )) s" \
      | tee -a "$out/times.txt"
  done
done
python3 - "$out" "${methods[@]}" <<'EOF'
import json, statistics, sys, pathlib
out, methods = pathlib.Path(sys.argv[1]), sys.argv[2:]
rows = ["| method | weights | seeds | balanced accuracy | balanced robustness PGD-20 | balanced robustness AA-lite | tail (80 %) PGD-20 | tail (80 %) AA-lite |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
def cell(values):
    values = [100 * v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {spread:.1f}"
for method in methods:
    for weights in ["raw", "ema"]:
        reports = [json.loads(p.read_text()) for p in sorted(out.glob(f"{method}-seed*/report-{weights}/report.json"))]
        if not reports:
            continue
        def get(attack, key):
            vals = []
            for r in reports:
                a = next(a for a in r["attacks"] if a["attack"] == attack)
                vals.append(a["balanced_accuracy"] if key == "balanced" else a["groups"]["tail"])
            return vals
        rows.append(f"| {method} | {weights} | {len(reports)} | {cell(get('clean', 'balanced'))} | {cell(get('pgd20', 'balanced'))} | "
                    f"{cell(get('aa-lite', 'balanced'))} | {cell(get('pgd20', 'tail'))} | {cell(get('aa-lite', 'tail'))} |")
table = "\n".join(rows)
(out / "study.md").write_text("Mean ± standard deviation over seeds, in %.\n\n" + table + "\n")
print(table)
EOF
