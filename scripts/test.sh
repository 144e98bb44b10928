#!/usr/bin/env bash
# Runs every test: unit tests and the end-to-end tests that start real registries
# (Debian's docker-registry) and check results with skopeo. Installs those where missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 gpg:gnupg kubectl:kubernetes-client openssl:openssl \
  /usr/bin/time:time
# Release mode: the tests hash hundreds of MB, which an unoptimised build makes slow.
# `cargo build --all-targets` first: it also links the example programs (the demo's fake
# platform, which a test runs), which `cargo test` builds only as test harnesses; with the
# same targets the features agree, so nothing is compiled twice.
cargo build --release --all-targets
cargo test --release --all-targets -- --test-threads=2
# The portable release binary: built for glibc 2.17 and checked (GLIBC_ symbol versions,
# shared libraries, size, --version), so a dependency that raises the floor fails here.
scripts/release.sh
