#!/usr/bin/env bash
# Builds the portable release binary dist/ferry-<version>-linux-<arch> and checks it:
#   * runs on glibc 2.17 or newer (CentOS/RHEL 7, Kylin V10, openEuler, Ubuntu 20.04, ...):
#     built with `cargo zigbuild --target <arch>-unknown-linux-gnu.2.17`, and the highest
#     GLIBC_ symbol version it needs is checked to be <= 2.17;
#   * needs no shared library outside libc, libm, libgcc_s, libpthread, libdl, librt, ld-linux;
#   * stripped, under 25 MB; `--version` runs;
#   * dist/ferry-<version>-linux-<arch>.sha256 beside it (sha256sum format);
#   * shell completions and a man page generated from the same command definitions.
# Installs what it needs (binutils, ziglang from PyPI, cargo-zigbuild from crates.io).
# Build the arm64 binary the same way on an arm64 machine (the script uses `uname -m`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing objdump:binutils python3:python3 file:file

python3 -c 'import ziglang' 2>/dev/null || python3 -m pip install --quiet ziglang
command -v cargo-zigbuild >/dev/null 2>&1 || cargo install --quiet --locked cargo-zigbuild

case "$(uname -m)" in
  x86_64) arch=amd64; triple=x86_64-unknown-linux-gnu ;;
  aarch64) arch=arm64; triple=aarch64-unknown-linux-gnu ;;
  *) echo "unsupported machine $(uname -m)" >&2; exit 1 ;;
esac
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
out=dist/ferry-$version-linux-$arch

# No debug info, symbols stripped: the dev profile keeps debug info for profiling.
CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=symbols \
  cargo zigbuild --quiet --release --locked --bin ferry --target "$triple.2.17" --target-dir target/zig
mkdir -p dist
cp "target/zig/$triple/release/ferry" "$out"
(cd dist && sha256sum "$(basename "$out")" >"$(basename "$out").sha256")

fail() { echo "release check failed: $*" >&2; exit 1; }
max_glibc=$(objdump -T "$out" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
[ "$(printf '%s\n2.17\n' "$max_glibc" | sort -V | tail -1)" = "2.17" ] \
  || fail "$out needs GLIBC_$max_glibc (> 2.17): a dependency raised the floor"
libs=$(objdump -p "$out" | awk '/NEEDED/ {print $2}')
for lib in $libs; do
  case "$lib" in
    libc.so.*|libm.so.*|libgcc_s.so.*|libpthread.so.*|libdl.so.*|librt.so.*|ld-linux*) ;;
    *) fail "$out needs $lib, which a platform node may not have" ;;
  esac
done
size=$(stat -c %s "$out")
[ "$size" -lt 25000000 ] || fail "$out is $size bytes (limit 25 MB)"
file "$out" | grep -q 'stripped' && ! file "$out" | grep -q 'not stripped' || fail "$out is not stripped"
"$out" --version >/dev/null || fail "$out --version does not run"

"$out" completions bash >"dist/ferry.bash"
"$out" completions zsh >"dist/_ferry"
"$out" completions fish >"dist/ferry.fish"
"$out" man >"dist/ferry.1"

echo "$out: $(numfmt --to=si "$size")B, needs GLIBC_$max_glibc at most, libraries: $(echo $libs)"
echo "sha256: $(cut -d' ' -f1 "$out.sha256")"
