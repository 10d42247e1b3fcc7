#!/usr/bin/env bash
# Builds and runs the reader comparison; prints one line per (file, reader). Needs no dataset.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cargo run --release --quiet --manifest-path "$here/Cargo.toml" --target-dir "${CARGO_TARGET_DIR:-$here/../../target}/interop-libraries" -- "$@"
