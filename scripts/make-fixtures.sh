#!/usr/bin/env bash
# Rebuilds the fixture packages under fixtures/ with our own code: `ferry dev fixtures`
# writes OCI layouts and package.yaml files, `ferry pack` turns each into a package.
# Output is deterministic: re-running produces the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --release
ferry=target/release/ferry
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p fixtures
$ferry dev fixtures "$work" | while read -r name; do
  version=$(awk '/^  version:/{print $2}' "$work/$name/package.yaml")
  arch=$(awk -F'[][]' '/arch:/{print $2}' "$work/$name/package.yaml")
  case "$arch" in *,*) a=ALL ;; *) a=${arch##*/} ;; esac
  $ferry pack --from "$work/$name/layout" --metadata "$work/$name/package.yaml" -o "fixtures/$name.$a.v$version.tgz"
done
ls -l fixtures
