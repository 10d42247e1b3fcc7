#!/usr/bin/env bash
# The GPU check, for a briefly borrowed NVIDIA machine (no network, no Rust toolchain needed there).
#
# Here (any machine with the toolchain):   benches/gpu-check.sh bundle [FOLDER]
#   builds `tailguard` and the GPU test suite with --features cuda (no CUDA toolkit needed to build), and copies
#   them with the PyTorch twin into FOLDER (default target/gpu-check), with CIFAR-10-LT (rho 100, 1,000 test images)
#   as a CIFAR-binary archive made from ../shared/datasets when it is there (else the embedded subset is used).
# Here, for a transfer with a size limit:  benches/gpu-check.sh pack [FOLDER] [CARRY]
#   packs FOLDER (default target/gpu-check) into CARRY (default target/gpu-carry): bundle.tar.xz (the programs with
#   their symbols, the scripts, the config: about 19 MB) and, from ../shared/datasets, the rho-100 split's training
#   images and 100 test images per class as JPEGs (cifar10-lt-rho100-jpeg.tar, about 21 MB against 38 for the
#   CIFAR-binary archive), and KERNEL_CACHE (a kernel-cache.tgz an earlier run wrote) as kernel-cache.tgz. There:
#   unpack both, then DATA=<the unpacked images> KERNEL_CACHE=<CARRY>/kernel-cache.tgz <bundle>/gpu-check.sh run OUT.
# There (the GPU machine, PyTorch installed): FOLDER/gpu-check.sh run [OUT]
#   1. `tailguard devices`;
#   2. `tailguard bench` against its PyTorch twin for resnet18 (and wrn-34-10 with ARCHS) at batch 128 (ratios of
#      time and peak memory); first, because it is the figure a lent GPU is for and it fills the kernel cache;
#   3. the GPU test suite on CUDA (every architecture forward/backward, BatchNorm modes, PGD/APGD, one step of every
#      method, a checkpoint round trip, all against the CPU backend);
#   4. one CIFAR-10-LT (rho 100) PGD-10 AT epoch of ResNet-18 with `tailguard train`, timed, against the twin's
#      measured PGD-10 AT step times the same number of steps;
#   5. AA-lite on 1,000 test images with `tailguard eval`, timed;
#   6. data-parallel scaling: the same epoch with `train --devices cuda:0,...` on 1, 2, 4, ... of the machine's GPUs
#      (skipped with one GPU), images/s and the speed-up over one GPU;
#   with peak GPU memory sampled by nvidia-smi for every step, everything written into OUT (default
#   gpu-check-results), summed up in OUT/summary.md. On a bare machine most of the first minutes go to NVRTC
#   compiling kernels (about 0.5 s each, docs/benchmarks.md): give each step room with STEP_LIMIT, and carry the
#   cache of compiled kernels an earlier run left (OUT/kernel-cache.tgz; KERNEL_CACHE names it).
#   Exits non-zero when a step failed (the others still run: a borrowed machine's minutes are not spent twice).
# Back here: benches/gpu-check.sh record OUT [DOC]
#   appends OUT/summary.md to DOC (default docs/benchmarks.md) under a dated heading naming the GPU.
# Rehearsal, on a CPU-only machine with Mesa's lavapipe and a Python with torch: benches/gpu-check.sh rehearse [OUT]
#   the same three commands end to end (bundle built with --features wgpu in the dev profile, the build CI's lavapipe
#   step already has; run against `wgpu:cpu` at tiny sizes: a linear model, batch 8, 20 images per class; record into
#   a copy of docs/benchmarks.md), failing on any step that fails, so that a lent GPU's first minutes are not lost to
#   a script error. About 11 minutes on 2 cores once built (lavapipe compiles every kernel).
# Environment: PYTHON (with torch; default python3), DATA (for steps 4 and 5, a CIFAR-binary archive or a folder of
# JPEGs in train/<class>/ and test/<class>/; default: the bundle's CIFAR-10-LT, else its embedded subset; the report
# names the one used). For bundle: FEATURES (default cuda) and PROFILE (release or dev; default release). For run:
# DEVICE (passed to every tailguard command as --device; default the build's default device), ARCHS (the benched
# architectures; default resnet18), TINY=1 (the rehearsal's sizes), STEP_LIMIT (seconds after which a step is
# stopped and counted as failed; default none) and STEPS (which of bench, suite, train, eval and scaling to run, in
# that order; default all: a second call on a machine still warm runs what the first did not reach).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)

bundle() {
    local root out test_binary target features=${FEATURES:-cuda} profile=${PROFILE:-release} profile_flag folder
    root=$(cd "$here/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    out=${1:-$target/gpu-check}
    case "$profile" in
        release) profile_flag=--release; folder=release ;;
        # As CI's lavapipe step builds it (the program's crate unoptimised: 3 minutes instead of 15), so a rehearsal
        # after CI reuses that build.
        dev) profile_flag="--config profile.dev.package.tailguard.opt-level=0"; folder=debug ;;
        *) echo "error: PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
    esac
    mkdir -p "$out"
    # One build gives both: cargo builds the program for its integration tests (a separate `cargo build` would
    # resolve features without the dev-dependencies and compile much of Burn again). The test binary's path is
    # printed by cargo; take the gpu_backend one.
    # shellcheck disable=SC2086
    test_binary=$(cargo test $profile_flag -p tailguard --features "$features" --test gpu_backend --no-run \
        --manifest-path "$root/Cargo.toml" 2>&1 | tee /dev/stderr | sed -n 's/.*Executable tests\/gpu_backend.rs (\(.*\))/\1/p' | tail -1)
    if [ -z "$test_binary" ]; then echo "error: cargo did not name the gpu_backend test binary" >&2; exit 1; fi
    case "$test_binary" in /*) ;; *) test_binary="$root/$test_binary" ;; esac
    cp "$test_binary" "$out/gpu_backend"
    cp "$target/$folder/tailguard" "$out/tailguard"
    # Same layout as the repository, so run.sh finds bench.py and compare.py relative to itself.
    mkdir -p "$out/benches"
    mkdir -p "$out/benches/pytorch"
    cp "$root"/benches/pytorch/*.py "$root"/benches/pytorch/*.sh "$out/benches/pytorch/"
    cp "$root/configs/cifar10-lt/pgd-at-rho100.toml" "$out/pgd-at-rho100.toml"
    cp "$root/datasets/cifar10-lt-mini.tar.gz" "$out/"
    local shared="$root/../shared/datasets"
    if [ -f "$shared/cifar10-jpeg-train.tar" ] && [ ! -f "$out/cifar10-lt-rho100.tar.gz" ]; then
        local images
        images=$(mktemp -d)
        tar -xf "$shared/cifar10-jpeg-train.tar" -C "$images"
        tar -xf "$shared/cifar10-jpeg-test.tar" -C "$images"
        "$out/tailguard" data --dataset imagefolder --data-dir "$images" --imbalance 100 \
            --export "$out/cifar10-lt-rho100.tar.gz" --test-per-class 100
        rm -rf "$images"
    fi
    cp "$0" "$out/gpu-check.sh"
    echo "bundle ready in $out: copy it to the GPU machine and run $out/gpu-check.sh run"
}

pack() {
    local root target bundle carry shared
    root=$(cd "$here/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    bundle=${1:-$target/gpu-check}
    carry=${2:-$target/gpu-carry}
    shared="$root/../shared/datasets"
    if [ ! -x "$bundle/tailguard" ] || [ ! -x "$bundle/gpu_backend" ]; then
        echo "error: $bundle holds no bundle: run $0 bundle first" >&2
        exit 1
    fi
    # Only into a folder pack made (it names itself in .gpu-check-pack) or a new or empty one.
    if [ -d "$carry" ] && [ -n "$(ls -A "$carry")" ] && [ ! -f "$carry/.gpu-check-pack" ]; then
        echo "error: $carry holds files gpu-check.sh pack did not write: name another folder, or empty this one" >&2
        exit 1
    fi
    mkdir -p "$carry"
    touch "$carry/.gpu-check-pack"
    tar -cJf "$carry/bundle.tar.xz.part" -C "$bundle" --exclude='cifar10-lt-*.tar.gz' .
    mv "$carry/bundle.tar.xz.part" "$carry/bundle.tar.xz"
    if [ -f "$shared/cifar10-jpeg-train.tar" ]; then
        local images subset classes class index count files
        images=$(mktemp -d)
        subset=$(mktemp -d)
        tar -xf "$shared/cifar10-jpeg-train.tar" -C "$images"
        tar -xf "$shared/cifar10-jpeg-test.tar" -C "$images"
        # The rho-100 sizes, 5000 * 100^(-c/9) for class c in name order as tailguard sorts an image folder, and five
        # more each: tailguard draws the split from what the folder holds, so it needs at least as many.
        mapfile -t classes < <(ls "$images/train" | sort)
        index=0
        for class in "${classes[@]}"; do
            count=$(awk -v c="$index" 'BEGIN { n = int(5000 * 100 ^ (-c / 9)) + 5; print (n > 5000 ? 5000 : n) }')
            mkdir -p "$subset/train/$class" "$subset/test/$class"
            # Arrays, not `ls | head`: head closing the pipe early fails the pipeline under pipefail.
            mapfile -t files < <(cd "$images/train/$class" && ls | sort)
            (cd "$images/train/$class" && cp -t "$subset/train/$class" "${files[@]:0:count}")
            mapfile -t files < <(cd "$images/test/$class" && ls | sort)
            (cd "$images/test/$class" && cp -t "$subset/test/$class" "${files[@]:0:100}")
            index=$((index + 1))
        done
        tar -cf "$carry/cifar10-lt-rho100-jpeg.tar.part" -C "$subset" .
        mv "$carry/cifar10-lt-rho100-jpeg.tar.part" "$carry/cifar10-lt-rho100-jpeg.tar"
        rm -rf "$images" "$subset"
    else
        echo "note: $shared not found: no image folder packed (run then uses the embedded subset)" >&2
    fi
    if [ -n "${KERNEL_CACHE:-}" ]; then
        if [ ! -f "$KERNEL_CACHE" ]; then
            echo "error: KERNEL_CACHE names $KERNEL_CACHE, which is not a file" >&2
            exit 1
        fi
        cp "$KERNEL_CACHE" "$carry/kernel-cache.tgz.part"
        mv "$carry/kernel-cache.tgz.part" "$carry/kernel-cache.tgz"
    fi
    du -ch "$carry"/* | tail -1
    echo "packed into $carry"
}

# Runs "$@", stopped after STEP_LIMIT seconds when that is set: on a borrowed machine one hung step must not take
# the minutes the others need.
limited() {
    if [ -n "${STEP_LIMIT:-}" ]; then
        timeout "$STEP_LIMIT" "$@"
    else
        "$@"
    fi
}

# Runs "$@" while nvidia-smi samples the GPU memory in use; prints the peak in MiB ("-" without nvidia-smi) to
# $peak_file.
with_memory() {
    local peak_file=$1
    shift
    if ! command -v nvidia-smi >/dev/null; then
        echo "-" >"$peak_file"
        "$@"
        return
    fi
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

# cubecl-cuda compiles kernels with NVRTC at run time, with CUDA's headers (CUDA_PATH, else /usr/local/cuda), and
# cudarc loads libcuda and libnvrtc by name: point both at what the machine has when they are not set already.
cuda_environment() {
    if [ -z "${CUDA_PATH:-}" ] && command -v nvcc >/dev/null; then
        CUDA_PATH=$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")
        export CUDA_PATH
    fi
    local dirs
    # Not CUDA's compat/ folder: its forward-compatibility libcuda hides the installed driver ("no device found").
    dirs=$( { find "${CUDA_PATH:-/usr/local/cuda}" -maxdepth 4 -name 'libnvrtc.so*' -not -path '*/compat/*' -printf '%h\n'
              find /usr/local/nvidia -maxdepth 3 -name 'libcuda.so*' -printf '%h\n'
              # A folder that is not there is no error here (find's status would end the script under pipefail).
              true; } 2>/dev/null | sort -u | paste -sd: -)
    if [ -n "$dirs" ]; then
        export LD_LIBRARY_PATH="$dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    fi
    echo "CUDA_PATH=${CUDA_PATH:-unset}; libraries from ${dirs:-the default loader paths}"
}

run() {
    local out=${1:-gpu-check-results}
    local python=${PYTHON:-python3}
    local tg="$here/tailguard"
    mkdir -p "$out"
    out=$(cd "$out" && pwd)
    # DATA relative to where run was called: the steps below run inside OUT.
    if [ -n "${DATA:-}" ] && [ -e "$DATA" ]; then DATA=$(cd "$(dirname "$DATA")" && pwd)/$(basename "$DATA"); fi
    # Every process of a run compiles its kernels anew on a bare machine (NVRTC, about 0.5 s each on the H200 of
    # 2026-12-04): cubecl-cuda keeps compiled kernels when its configuration names a cache, and cubecl reads
    # cubecl.toml from the working folder, so the steps run inside OUT with one there. (wgpu ignores the setting.)
    local marker="# written by tailguard's gpu-check.sh run"
    if [ -f "$out/cubecl.toml" ] && [ "$(head -1 "$out/cubecl.toml")" != "$marker" ]; then
        echo "error: $out/cubecl.toml was not written by gpu-check.sh: move it, or give run another OUT" >&2
        exit 1
    fi
    printf '%s\n[compilation]\ncache = { file = "%s" }\n' "$marker" "$out/kernel-cache" >"$out/cubecl.toml"
    # A cache an earlier run brought back (KERNEL_CACHE, its OUT/kernel-cache.tgz) spares this machine the
    # compilations that run made: on the H200 of 2026-12-04 a bare run spent its first 400 s in NVRTC.
    if [ -n "${KERNEL_CACHE:-}" ] && [ ! -f "$KERNEL_CACHE" ]; then
        echo "error: KERNEL_CACHE names $KERNEL_CACHE, which is not a file" >&2
        exit 1
    fi
    if [ -n "${KERNEL_CACHE:-}" ] && [ ! -d "$out/kernel-cache" ]; then
        if tar -tzf "$KERNEL_CACHE" | grep -qv '^kernel-cache/'; then
            echo "error: $KERNEL_CACHE holds more than a kernel-cache/ folder: give the kernel-cache.tgz a run wrote" >&2
            exit 1
        fi
        tar -xzf "$KERNEL_CACHE" -C "$out"
        echo "kernel cache from $KERNEL_CACHE: $(du -sh "$out/kernel-cache" | cut -f1)"
    fi
    cd "$out"
    local start=$SECONDS failures=0
    # The GPU's run (DEVICE unset: the CUDA build's default device) needs CUDA found; the rehearsal does not.
    if [ -z "${DEVICE:-}" ]; then cuda_environment; fi
    # Every tailguard command gets DEVICE when it is set (the rehearsal's wgpu:cpu).
    local device=()
    if [ -n "${DEVICE:-}" ]; then device=(--device "$DEVICE"); fi
    # Sizes: the GPU's, or the rehearsal's (a linear model: lavapipe autotunes each convolution for minutes).
    # WRN-34-10 only when asked (ARCHS="resnet18 wrn-34-10"): on a bare machine each architecture's kernels are
    # compiled by NVRTC first (ResNet-18's first step: 152 kernels, 83 s on the H200 of 2026-12-04).
    local archs=(${ARCHS:-resnet18}) batch=128 iterations=3 apgd=20 matmul=2048 limit=1000 eval_batch=500
    local train_sets=()
    if [ "${TINY:-0}" = 1 ]; then
        archs=(linear) batch=8 iterations=1 apgd=2 matmul=256 limit=20 eval_batch=10
        train_sets=(--set model.arch=linear --set data.n_max=20 --set data.imbalance=10 --set "optim.batch_size=$batch")
    fi
    fail() {
        echo "FAILED: $*" | tee -a "$out/summary.md"
        failures=$((failures + 1))
    }
    local steps=" ${STEPS:-bench suite train eval scaling} " step
    for step in $steps; do
        case "$step" in
            bench | suite | train | eval | scaling) ;;
            *) echo "error: STEPS names \"$step\": the steps are bench, suite, train, eval and scaling" >&2; exit 2 ;;
        esac
    done
    wants() { [[ "$steps" == *" $1 "* ]]; }
    {
        echo "# tailguard GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
        if command -v nvidia-smi >/dev/null; then
            nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
        else
            echo "no nvidia-smi: ${DEVICE:-default device} (peak memory not sampled)"
        fi
    } >"$out/summary.head"
    # A whole run starts the summary anew; one with STEPS continues it (a second call into the same OUT).
    if [ -n "${STEPS:-}" ]; then tee -a "$out/summary.md" <"$out/summary.head"; else tee "$out/summary.md" <"$out/summary.head"; fi
    rm -f "$out/summary.head"

    echo "== devices" | tee -a "$out/summary.md"
    "$tg" devices | tee "$out/devices.txt" | tee -a "$out/summary.md" || fail "tailguard devices"

    if wants bench; then
        echo "== bench against PyTorch (batch $batch)" | tee -a "$out/summary.md"
        local arch
        for arch in "${archs[@]}"; do
            # In a condition, so that a failed bench is counted instead of ending the script (set -e, pipefail).
            if ! TAILGUARD="$tg" TAILGUARD_ARGS="${device[*]}" PYTHON="$python" OUT="$out/bench-$arch" \
                limited "$here/benches/pytorch/run.sh" --arch "$arch" --batch "$batch" --iterations "$iterations" --warmup 1 \
                --workloads natural,pgd10-at,pgd20-eval,apgd-ce-eval --apgd-iterations "$apgd" --matmul-size "$matmul" \
                2>"$out/bench-$arch.log" | tee -a "$out/summary.md"; then
                fail "bench $arch: see bench-$arch.log"
            fi
        done
    fi

    if wants suite; then
        echo "== GPU test suite (against the CPU backend)" | tee -a "$out/summary.md"
        # The suite runs the program too: the one beside it, not the path it was built with.
        export TAILGUARD_BIN="$tg"
        if limited "$here/gpu_backend" --test-threads 1 >"$out/gpu_backend.txt" 2>&1; then
            grep "test result" "$out/gpu_backend.txt" | tee -a "$out/summary.md"
        else
            fail "GPU test suite: see gpu_backend.txt"
            tail -20 "$out/gpu_backend.txt"
            # The failed tests once more: on lavapipe a gradient mismatch came and went between processes with the
            # same binary and autotune cache (docs/benchmarks.md). Still counted as a failure; the rerun says which kind.
            local failed=()
            mapfile -t failed < <(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$out/gpu_backend.txt")
            if [ ${#failed[@]} -gt 0 ]; then
                if limited "$here/gpu_backend" --test-threads 1 --exact "${failed[@]}" >"$out/gpu_backend-rerun.txt" 2>&1; then
                    echo "rerun of the ${#failed[@]} failed test(s): passed (intermittent)" | tee -a "$out/summary.md"
                else
                    echo "rerun of the ${#failed[@]} failed test(s): failed again (see gpu_backend-rerun.txt)" \
                        | tee -a "$out/summary.md"
                fi
            fi
        fi
    fi

    local data=${DATA:-}
    if [ -z "$data" ]; then
        for candidate in "$here/cifar10-lt-rho100.tar.gz" "$here/cifar10-lt-mini.tar.gz"; do
            if [ -e "$candidate" ]; then data=$candidate; break; fi
        done
    fi
    # A folder is read as CIFAR-10 JPEGs in train/<class>/ and test/<class>/ (smaller to carry than the binary
    # archive: an image folder of the rho-100 split's images is 21 MB against 38), an archive as CIFAR-binary.
    local dataset=cifar10
    if [ -d "$data" ]; then dataset=imagefolder; fi
    # One epoch, as step 4 and the scaling runs of step 6 train it.
    local epoch=(train --config "$here/pgd-at-rho100.toml" --set "data.dataset=$dataset" --set "data.data_dir=$data"
                 --set optim.epochs=1 --set data.validation_fraction=0 "${train_sets[@]}")
    if wants train; then
        echo "== one PGD-10 AT epoch, ${archs[0]/linear/a linear model}, long-tailed CIFAR-10 from $(basename "$data")" \
            | tee -a "$out/summary.md"
        with_memory "$out/train-peak-mib.txt" limited "$tg" "${epoch[@]}" "${device[@]}" --out "$out/train-run" --force --json \
            >"$out/train.jsonl" 2>"$out/train.log" || fail "training: see train.log"
        if [ -s "$out/train.jsonl" ]; then
            "$python" - "$out" "$batch" "${archs[0]}" <<'PY' | tee -a "$out/summary.md" || fail "the epoch's figures"
import json, sys, math
out, batch, arch = sys.argv[1], int(sys.argv[2]), sys.argv[3]
epoch = json.loads(open(f"{out}/train.jsonl").read().splitlines()[-1])
images = epoch["images_per_second"] * epoch["seconds"]
twin = json.load(open(f"{out}/bench-{arch}/pytorch.json"))
step = next(r for r in twin["results"] if r["workload"] == "pgd10-at")["median_seconds"]
steps = math.ceil(images / batch)
peak = open(f"{out}/train-peak-mib.txt").read().strip() or "-"
print(f"tailguard epoch {epoch['seconds']:.1f} s ({epoch['images_per_second']:.0f} img/s, peak {peak} MiB); "
      f"PyTorch twin {steps} steps x {step:.3f} s = {steps * step:.1f} s; ratio {epoch['seconds'] / (steps * step):.2f}")
PY
        fi
    fi

    if wants eval; then
        echo "== AA-lite on $limit test images" | tee -a "$out/summary.md"
        if [ -d "$out/train-run/last" ]; then
            local started=$SECONDS
            if with_memory "$out/eval-peak-mib.txt" limited "$tg" eval --checkpoint "$out/train-run/last" "${device[@]}" \
                --dataset "$dataset" --data-dir "$data" --attacks clean,aa-lite --limit "$limit" --batch-size "$eval_batch" \
                --report "$out/eval" --force >"$out/eval.log" 2>&1; then
                echo "tailguard AA-lite on $limit images: $((SECONDS - started)) s, peak $(cat "$out/eval-peak-mib.txt") MiB" \
                    | tee -a "$out/summary.md"
            else
                fail "eval: see eval.log"
            fi
        else
            fail "no checkpoint to evaluate (training failed)"
        fi
    fi

    if wants scaling; then
        # The rehearsal has one device and still walks the loop once, so its figures' code runs before a GPU's does.
        local gpus
        if [ -n "${DEVICE:-}" ]; then gpus=1; else gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
        echo "== data-parallel scaling over ${gpus:-0} GPUs (one PGD-10 AT epoch each)" | tee -a "$out/summary.md"
        if [ "${gpus:-0}" -ge 2 ] || [ -n "${DEVICE:-}" ]; then
            local n=1 list base=""
            while [ "$n" -le "$gpus" ]; do
                if [ -n "${DEVICE:-}" ]; then list=$DEVICE; else list=$(seq -s, -f 'cuda:%g' 0 $((n - 1))); fi
                "$tg" "${epoch[@]}" --out "$out/scaling-$n" --force --devices "$list" --json \
                    >"$out/scaling-$n.jsonl" 2>"$out/scaling-$n.log" || fail "$n GPUs: see scaling-$n.log"
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
    fi

    echo "total $((SECONDS - start)) s, $failures failed step(s)" | tee -a "$out/summary.md"
    # What the next lent GPU needs to skip this run's compilations (bring it back, give it as KERNEL_CACHE).
    if [ -d "$out/kernel-cache" ]; then
        tar -czf "$out/kernel-cache.tgz.part" -C "$out" kernel-cache && mv "$out/kernel-cache.tgz.part" "$out/kernel-cache.tgz"
    fi
    [ "$failures" = 0 ]
}

# Appends a run's summary to the benchmarks document under a heading with its date and GPU.
record() {
    local out=${1:?usage: gpu-check.sh record OUT [DOC]}
    local doc=${2:-$here/../docs/benchmarks.md}
    if [ ! -s "$out/summary.md" ]; then
        echo "error: $out/summary.md not found: give the folder gpu-check.sh run wrote" >&2
        exit 1
    fi
    local title gpu
    title=$(head -1 "$out/summary.md" | sed 's/^# //')
    gpu=$(sed -n 2p "$out/summary.md")
    if grep -qF "### $title" "$doc"; then
        echo "error: $doc already has \"$title\"" >&2
        exit 1
    fi
    {
        echo
        echo "### $title ($gpu)"
        echo
        echo "Recorded with \`benches/gpu-check.sh record\` from \`$(basename "$out")/summary.md\`:"
        echo
        echo '```text'
        tail -n +3 "$out/summary.md"
        echo '```'
    } >>"$doc"
    echo "appended \"$title\" to $doc"
}

# The whole flow on a CPU-only machine: bundle (wgpu, dev profile), run on lavapipe at tiny sizes, record into a
# copy of the benchmarks document.
rehearse() {
    local root target out
    root=$(cd "$here/.." && pwd)
    target=${CARGO_TARGET_DIR:-$root/target}
    out=${1:-$target/gpu-check-rehearsal}
    if ! "${PYTHON:-python3}" -c "import torch" 2>/dev/null; then
        echo "error: ${PYTHON:-python3} cannot import torch: point PYTHON at an interpreter that can" >&2
        exit 1
    fi
    local icd
    icd=$(ls /usr/share/vulkan/icd.d/lvp_icd*.json 2>/dev/null | head -1)
    if [ -z "$icd" ]; then
        echo "error: Mesa's lavapipe is not installed (bash .ci/lavapipe installs it)" >&2
        exit 1
    fi
    export VK_ICD_FILENAMES=$icd CUBECL_AUTOTUNE_LEVEL=minimal
    export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
    FEATURES=wgpu PROFILE=dev bundle "$out/bundle"
    DEVICE=wgpu:cpu TINY=1 "$out/bundle/gpu-check.sh" run "$out/results"
    cp "$root/docs/benchmarks.md" "$out/benchmarks.md"
    "$out/bundle/gpu-check.sh" record "$out/results" "$out/benchmarks.md"
    grep -q "ratio" "$out/benchmarks.md"
    echo "rehearsal passed: $out/results/summary.md, recorded into $out/benchmarks.md"
}

case "${1:-}" in
    bundle) shift; bundle "$@" ;;
    run) shift; run "$@" ;;
    record) shift; record "$@" ;;
    rehearse) shift; rehearse "$@" ;;
    pack) shift; pack "$@" ;;
    *) echo "usage: $0 bundle [FOLDER] | pack [FOLDER] [CARRY] | run [OUT] | record OUT [DOC] | rehearse [OUT]" >&2; exit 2 ;;
esac
