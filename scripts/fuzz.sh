#!/usr/bin/env bash
# Fuzzes the package reader for a bounded time (default 120 s): scripts/fuzz.sh [SECONDS]
# cargo-fuzz needs nightly features; the machine has one stable toolchain, so RUSTC_BOOTSTRAP=1
# unlocks them. Seeds: the fixture packages, decompressed (the target gzips its input itself).
# Crashes land in fuzz/artifacts/package_reader/; copy them to fuzz/regressions/ (replayed by
# tests/fuzz_regressions.rs in every test run) once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-120}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
corpus=fuzz/corpus/package_reader
mkdir -p "$corpus"
for f in fixtures/*.tgz fuzz/regressions/*; do
  [ -f "$f" ] || continue
  case "$f" in *.tgz) gzip -dc "$f" >"$corpus/seed-$(basename "$f" .tgz).tar" ;; *) cp "$f" "$corpus/" ;; esac
done
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run package_reader "corpus/package_reader" -- \
  -max_total_time="$secs" -rss_limit_mb=1024 -max_len=1048576 -timeout=10
