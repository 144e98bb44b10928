#!/usr/bin/env bash
# `ferry sync` of a packed core package (registry storage tree + nested plugins) against the
# way it is done without ferry: tar xzf, a registry serving the extracted tree, skopeo copies
# (4 at a time) of every core image and of every plugin's layout. Plus the DR fan-out: one sync
# to two registries against two syncs. Same data, same run, loopback registries.
#   scripts/bench-sync.sh [--quick]      (scripts/bench.sh runs it too)
# Writes the table between the bench-sync markers of docs/benchmarks.md (full run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 /usr/bin/time:time

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then images=6; scale=0.25; plugins=2; else images=12; scale=0.5; plugins=3; fi
out=${BENCH_OUT:-}
[ -z "$out" ] && [ $quick = 0 ] && out=docs/benchmarks.md

cargo build --release --quiet
ferry=$PWD/target/release/ferry
work=$(mktemp -d /tmp/ferry-bench-sync.XXXXXX)
results=$work/results.tsv
: >"$results"
cleanup() {
  set +e
  for p in "$work"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n=0
fresh_registry() { # sets $h and $regdir
  n=$((n + 1)); regdir=$work/reg$n
  start_registry "$regdir" "$(free_port)" >&2
  h=127.0.0.1:$(sed -n 's/.*addr: 127.0.0.1:\([0-9]*\).*/\1/p' "$regdir/config.yml")
}
lo_tx() { cat /sys/class/net/lo/statistics/tx_bytes; }
measure() { # measure SCENARIO TOOL -- CMD...
  local scenario=$1 tool=$2 b0 b1; shift 3
  b0=$(lo_tx)
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/last.out" 2>"$work/last.err" || {
    echo "FAILED: $scenario $tool" >&2; cat "$work/last.err" >&2; return 1; }
  b1=$(lo_tx)
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" \
    "$(python3 -c "print(round($user+$sys,2))")" "$((rss / 1024))" "$((b1 - b0))" >>"$results"
  echo "  $scenario / $tool: ${wall}s" >&2
}

echo "== building the core package: storage tree of $images images + $plugins plugins" >&2
"$ferry" dev corpus "$work/corpus" --images "$images" --scale "$scale" >/dev/null
"$ferry" pack --from "$work/corpus/layout" --metadata "$work/corpus/package.yaml" -o "$work/corpus.tgz" >/dev/null
fresh_registry; seed=$regdir
"$ferry" push "$work/corpus.tgz" --dest-repo "$h" --plain --quiet >/dev/null
stop_registry "$seed"
core=$work/core
mkdir -p "$core/registry" "$core/plugins"
cp -r "$seed/data/docker" "$core/registry/docker"
printf 'apiVersion: ferry/v1\nkind: Package\nmetadata:\n  name: core\n  version: v4.2.0\nspec:\n  type: core\n' >"$core/package.yaml"
for i in $(seq "$plugins"); do
  "$ferry" dev corpus "$work/p$i" --images 3 --scale "$scale" --seed $((i + 10)) >/dev/null
  sed -i "s/name: .*/name: plugin$i/; s/type: .*/type: plugin/; s|/bench/|/plugin$i/|" "$work/p$i/package.yaml"
  sed -i "s|/bench/|/plugin$i/|g" "$work/p$i/layout/index.json"
  "$ferry" pack --from "$work/p$i/layout" --metadata "$work/p$i/package.yaml" -o "$core/plugins/plugin$i.tgz" >/dev/null
done
(cd "$core" && find . -type f ! -name checksums.sha256 -printf '%P\n' | sort | xargs sha256sum >checksums.sha256)
tgz=$work/core.tgz
tar -C "$core" -I 'gzip -1' -cf "$tgz" .
rm -rf "$core" "$work"/p* "$work/corpus"
size=$(stat -c %s "$tgz")
echo "core package: $((size / 1000000)) MB" >&2

creds=(--username nobody --password unused --plain)
echo "== sync of the packed core package" >&2
fresh_registry
measure sync "ferry sync core.tgz" -- "$ferry" sync --only-sync-image --package "$tgz" --registry "$h" "${creds[@]}" --quiet
fresh_registry; dest=$h
cat >"$work/peer.sh" <<'PEER'
#!/bin/bash
# what an operator does without ferry: extract, serve the tree, copy every image
set -e
tgz=$1 dest=$2 work=$3
x=$work/x; rm -rf "$x"; mkdir -p "$x"
tar xzf "$tgz" -C "$x"
(cd "$x" && sha256sum --quiet -c checksums.sha256)
. "$PWD/scripts/lib.sh"
src=$work/src; mkdir -p "$src"; mv "$x/registry" "$src/data"
port=$(free_port); start_registry "$src" "$port" >/dev/null
repos=$(curl -sf "http://127.0.0.1:$port/v2/_catalog?n=1000" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["repositories"]))')
for r in $repos; do
  for t in $(curl -sf "http://127.0.0.1:$port/v2/$r/tags/list" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)["tags"]))'); do
    echo "$r:$t"
  done
done | xargs -P4 -I{} skopeo copy --quiet --all --src-tls-verify=false --dest-tls-verify=false "docker://127.0.0.1:$port/{}" "docker://$dest/{}"
kill "$(cat "$src/pid")"
for p in "$x"/plugins/*.tgz; do
  d=$work/plug; rm -rf "$d"; mkdir -p "$d"; tar xzf "$p" -C "$d"
  python3 -c 'import json,sys; [print(m["annotations"]["org.opencontainers.image.ref.name"]) for m in json.load(open(sys.argv[1]))["manifests"]]' "$d/images/index.json" |
    xargs -P4 -I{} sh -c 'r="{}"; skopeo copy --quiet --all --dest-tls-verify=false "oci:$0:$r" "docker://$1/${r#*/}"' "$d/images" "$dest"
done
PEER
chmod +x "$work/peer.sh"
measure sync "tar xzf + sha256sum -c + registry + skopeo x4" -- "$work/peer.sh" "$tgz" "$dest" "$work"

echo "== DR: one sync to two registries vs two syncs" >&2
fresh_registry; h1=$h; fresh_registry; h2=$h
measure dr "ferry sync --standby-registry" -- "$ferry" sync --only-sync-image --package "$tgz" --registry "$h1" "${creds[@]}" \
  --standby-registry "$h2" --standby-no-auth --standby-plain --quiet
fresh_registry; h1=$h; fresh_registry; h2=$h
measure dr "ferry sync, twice" -- bash -c "'$ferry' sync --only-sync-image --package '$tgz' --registry '$h1' ${creds[*]} --quiet && '$ferry' sync --only-sync-image --package '$tgz' --registry '$h2' ${creds[*]} --quiet"

python3 - "$results" "$size" "$quick" >"$work/report.md" <<'PY'
import sys, datetime, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
size, quick = int(sys.argv[2]), sys.argv[3] == "1"
get = lambda sc, t: next(r for r in rows if r[0] == sc and r[1].startswith(t))
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores; core package {size/1e6:.0f} MB"
      f" (storage tree + nested plugins, gzip -1){' (quick)' if quick else ''}. Command: `scripts/bench-sync.sh{' --quick' if quick else ''}`\n")
print("| scenario | tool | wall s | CPU s | peak RSS MB | bytes sent MB | note |")
print("|---|---|---:|---:|---:|---:|---|")
for sc, tool, wall, cpu, rss, b in rows:
    note = ""
    if sc == "sync" and not tool.startswith("ferry"):
        f = get("sync", "ferry")
        note = f"ferry is {float(wall)/float(f[2]):.2f}x faster"
    if sc == "dr" and "standby" in tool:
        two = get("dr", "ferry sync, twice")
        note = f"two syncs take {float(two[2])/float(wall):.2f}x as long"
    print(f"| {sc} | {tool} | {wall} | {cpu} | {rss} | {int(b)/1e6:.1f} | {note} |")
PY
if [ -n "$out" ]; then
  write_block "$out" bench-sync 'Sync of a core package (`scripts/bench-sync.sh`)' "$work/report.md"
fi
cat "$work/report.md"
