#!/usr/bin/env bash
# The GPU check, for a briefly borrowed NVIDIA machine (no network, no Rust toolchain needed there).
#
# Here (any machine with the toolchain):   benches/gpu-check.sh bundle [FOLDER]
#   builds `tailguard` and the GPU test suite with --features cuda (no CUDA toolkit needed to build), and copies
#   them with the PyTorch twin into FOLDER (default target/gpu-check), with CIFAR-10-LT (rho 100, 1,000 test images)
#   as a CIFAR-binary archive made from ../shared/datasets when it is there (else the embedded subset is used).
# There (the GPU machine, PyTorch installed): FOLDER/gpu-check.sh run [OUT]
#   1. `tailguard devices`;
#   2. the GPU test suite on CUDA (every architecture forward/backward, BatchNorm modes, PGD/APGD, one step of every
#      method, a checkpoint round trip, all against the CPU backend);
#   3. `tailguard bench` against its PyTorch twin for resnet18 and wrn-34-10 at batch 128 (ratios of time and
#      peak memory);
#   4. one CIFAR-10-LT (rho 100) PGD-10 AT epoch of ResNet-18 with `tailguard train`, timed, against the twin's
#      measured PGD-10 AT step times the same number of steps;
#   5. AA-lite on 1,000 test images with `tailguard eval`, timed;
#   6. data-parallel scaling: the same epoch with `train --devices cuda:0,...` on 1, 2, 4, ... of the machine's GPUs
#      (skipped with one GPU), images/s and the speed-up over one GPU;
#   with peak GPU memory sampled by nvidia-smi for every step, everything written into OUT (default
#   gpu-check-results). Meant to finish in under 8 minutes on an H100-class GPU.
# Environment: PYTHON (with torch; default python3), DATA (a CIFAR-binary archive for steps 4 and 5; default: the
# bundle's CIFAR-10-LT, else its embedded subset; the report names the one used).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

bundle() {
    local root out test_binary target
    root=$(cd "$here/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    out=${1:-$target/gpu-check}
    mkdir -p "$out"
    cargo build --release -p tailguard --features cuda --manifest-path "$root/Cargo.toml"
    cp "$target/release/tailguard" "$out/tailguard"
    # The test binary's path is printed by cargo; take the gpu_backend one.
    test_binary=$(cargo test --release -p tailguard --features cuda --test gpu_backend --no-run \
        --manifest-path "$root/Cargo.toml" 2>&1 | sed -n 's/.*Executable tests\/gpu_backend.rs (\(.*\))/\1/p' | tail -1)
    case "$test_binary" in /*) ;; *) test_binary="$root/$test_binary" ;; esac
    cp "$test_binary" "$out/gpu_backend"
    # Same layout as the repository, so run.sh finds bench.py and compare.py relative to itself.
    mkdir -p "$out/benches"
    cp -r "$root/benches/pytorch" "$out/benches/pytorch"
    cp "$root/configs/cifar10-lt/pgd-at-rho100.toml" "$out/pgd-at-rho100.toml"
    cp "$root/datasets/cifar10-lt-mini.tar.gz" "$out/"
    local shared="$root/../shared/datasets"
    if [ -f "$shared/cifar10-jpeg-train.tar" ] && [ ! -f "$out/cifar10-lt-rho100.tar.gz" ]; then
        local images
        images=$(mktemp -d)
        tar -xf "$shared/cifar10-jpeg-train.tar" -C "$images"
        tar -xf "$shared/cifar10-jpeg-test.tar" -C "$images"
        "$target/release/tailguard" data --dataset imagefolder --data-dir "$images" --imbalance 100 \
            --export "$out/cifar10-lt-rho100.tar.gz" --test-per-class 100
        rm -rf "$images"
    fi
    cp "$0" "$out/gpu-check.sh"
    echo "bundle ready in $out: copy it to the GPU machine and run $out/gpu-check.sh run"
}

# Runs "$@" while nvidia-smi samples the GPU memory in use; prints the peak in MiB to $peak_file.
with_memory() {
    local peak_file=$1
    shift
    local log
    log=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$log" 2>/dev/null &
    local sampler=$!
    local status=0
    "$@" || status=$?
    kill "$sampler" 2>/dev/null || true
    sort -n "$log" | tail -1 >"$peak_file"
    rm -f "$log"
    return $status
}

run() {
    local out=${1:-gpu-check-results}
    local python=${PYTHON:-python3}
    local tg="$here/tailguard"
    mkdir -p "$out"
    local start=$SECONDS
    {
        echo "# tailguard GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
    } | tee "$out/summary.md"

    echo "== devices" | tee -a "$out/summary.md"
    "$tg" devices | tee "$out/devices.txt" | tee -a "$out/summary.md"

    echo "== GPU test suite (CUDA against the CPU backend)" | tee -a "$out/summary.md"
    if "$here/gpu_backend" --test-threads 1 >"$out/gpu_backend.txt" 2>&1; then
        grep "test result" "$out/gpu_backend.txt" | tee -a "$out/summary.md"
    else
        echo "FAILED: see gpu_backend.txt" | tee -a "$out/summary.md"
        tail -20 "$out/gpu_backend.txt"
    fi

    echo "== bench against PyTorch (batch 128)" | tee -a "$out/summary.md"
    for arch in resnet18 wrn-34-10; do
        TAILGUARD="$tg" PYTHON="$python" OUT="$out/bench-$arch" \
            "$here/benches/pytorch/run.sh" --arch "$arch" --batch 128 --iterations 3 --warmup 1 \
            --workloads natural,pgd10-at,pgd20-eval,apgd-ce-eval --apgd-iterations 20 \
            2>"$out/bench-$arch.log" | tee -a "$out/summary.md" || echo "bench $arch failed: see bench-$arch.log" | tee -a "$out/summary.md"
    done

    local data=${DATA:-}
    if [ -z "$data" ]; then
        for candidate in "$here/cifar10-lt-rho100.tar.gz" "$here/cifar10-lt-mini.tar.gz"; do
            if [ -e "$candidate" ]; then data=$candidate; break; fi
        done
    fi
    echo "== one PGD-10 AT epoch, ResNet-18, long-tailed CIFAR-10 (rho 100) from $(basename "$data")" | tee -a "$out/summary.md"
    with_memory "$out/train-peak-mib.txt" "$tg" train --config "$here/pgd-at-rho100.toml" \
        --set "data.data_dir=$data" --set optim.epochs=1 --set data.validation_fraction=0 \
        --out "$out/train-run" --force --json >"$out/train.jsonl" 2>"$out/train.log" || true
    if [ -s "$out/train.jsonl" ]; then
        "$python" - "$out" <<'PY' | tee -a "$out/summary.md"
import json, sys, math
out = sys.argv[1]
epoch = json.loads(open(f"{out}/train.jsonl").read().splitlines()[-1])
images = epoch["images_per_second"] * epoch["seconds"]
twin = json.load(open(f"{out}/bench-resnet18/pytorch.json"))
step = next(r for r in twin["results"] if r["workload"] == "pgd10-at")["median_seconds"]
steps = math.ceil(images / 128)
peak = open(f"{out}/train-peak-mib.txt").read().strip() or "-"
print(f"tailguard epoch {epoch['seconds']:.1f} s ({epoch['images_per_second']:.0f} img/s, peak {peak} MiB); "
      f"PyTorch twin {steps} steps x {step:.3f} s = {steps * step:.1f} s; ratio {epoch['seconds'] / (steps * step):.2f}")
PY
    else
        echo "training failed: see train.log" | tee -a "$out/summary.md"
    fi

    echo "== AA-lite on 1,000 test images" | tee -a "$out/summary.md"
    if [ -d "$out/train-run/last" ]; then
        local started=$SECONDS
        with_memory "$out/eval-peak-mib.txt" "$tg" eval --checkpoint "$out/train-run/last" --dataset cifar10 \
            --data-dir "$data" --attacks clean,aa-lite --limit 1000 --batch-size 500 \
            --report "$out/eval" --force >"$out/eval.log" 2>&1 || echo "eval failed: see eval.log" | tee -a "$out/summary.md"
        echo "tailguard AA-lite on 1,000 images: $((SECONDS - started)) s, peak $(cat "$out/eval-peak-mib.txt") MiB" \
            | tee -a "$out/summary.md"
    fi
    local gpus
    gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true)
    echo "== data-parallel scaling over ${gpus:-0} GPUs (one PGD-10 AT epoch each)" | tee -a "$out/summary.md"
    if [ "${gpus:-0}" -ge 2 ]; then
        local n=1 list base=""
        while [ "$n" -le "$gpus" ]; do
            list=$(seq -s, -f 'cuda:%g' 0 $((n - 1)))
            "$tg" train --config "$here/pgd-at-rho100.toml" --set "data.data_dir=$data" --set optim.epochs=1 \
                --set data.validation_fraction=0 --out "$out/scaling-$n" --force --devices "$list" --json \
                >"$out/scaling-$n.jsonl" 2>"$out/scaling-$n.log" || echo "$n GPUs failed: see scaling-$n.log" | tee -a "$out/summary.md"
            if [ -s "$out/scaling-$n.jsonl" ]; then
                local rate
                rate=$("$python" -c "import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])['images_per_second'])" "$out/scaling-$n.jsonl")
                base=${base:-$rate}
                echo "$n GPU(s): $rate img/s, speed-up $("$python" -c "print(f'{$rate / $base:.2f}')")" | tee -a "$out/summary.md"
            fi
            n=$((n * 2))
        done
    else
        echo "skipped: one GPU" | tee -a "$out/summary.md"
    fi
    echo "total $((SECONDS - start)) s" | tee -a "$out/summary.md"
}

case "${1:-}" in
    bundle) shift; bundle "$@" ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 bundle [FOLDER] | run [OUT]" >&2; exit 2 ;;
esac
