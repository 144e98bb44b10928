#!/usr/bin/env bash
# Field scale (issue 25): a generated package of 1,000 images (~4 blobs each plus 8 shared
# bases; several GB of incompressible gzip'd layers; the .tgz at gzip -1, as real packages
# are: GNU gzip -1) pushed into fresh Distribution registries on loopback: dry run, cold, warm, DR fan-out,
# with peak RSS and CPU seconds per GB; then the same through `tar xzf` + skopeo x4, and the
# floor (curl x4 monolithic uploads of the extracted blobs), all in this one run so the
# ratios share the machine's load (written into the table).
#   scripts/bench.sh --scale            (or scripts/bench-scale.sh)
#   SCALE_IMAGES=1000 SCALE_MEAN_KB=1000 (defaults: ~3 GB of blobs, ~6 GB of disk at the peak)
# Writes its table between the bench-scale markers of docs/benchmarks.md (BENCH_OUT=file to
# choose, BENCH_OUT=- to only print).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 curl:curl \
  /usr/bin/time:time
images=${SCALE_IMAGES:-1000}
mean_kb=${SCALE_MEAN_KB:-1000}
out=${BENCH_OUT:-docs/benchmarks.md}

cargo build --release --quiet
ferry=$PWD/target/release/ferry
work=$(mktemp -d /tmp/ferry-bench-scale.XXXXXX)
results=$work/results.tsv
: >"$results"
cleanup() {
  set +e
  for p in "$work"/reg*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

n_reg=0
fresh_registry() { # a new, empty registry on loopback; sets $h and $regdir
  n_reg=$((n_reg + 1))
  regdir=$work/reg$n_reg
  local p
  p=$(free_port)
  start_registry "$regdir" "$p" >&2
  h="127.0.0.1:$p"
}
done_registry() { stop_registry "$1"; rm -rf "$1/data"; }

measure() { # measure SCENARIO TOOL -- CMD...: wall, user, sys, peak RSS, load when it started
  local scenario=$1 tool=$2 load
  shift 3
  load=$(cut -d' ' -f1 /proc/loadavg)
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/last.out" 2>"$work/last.err" || {
    echo "FAILED: $scenario $tool" >&2; tail -20 "$work/last.err" >&2; return 1; }
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" "$user" "$sys" \
    "$((rss / 1024))" "$load" >>"$results"
  echo "  $scenario / $tool: ${wall}s (load $load)" >&2
}

echo "== corpus: $images images, own layers of ${mean_kb} kB on average" >&2
"$ferry" dev scale "$work/c" --images "$images" --mean-kb "$mean_kb" >/dev/null
# GNU gzip -1, as `tar czf`-style tooling writes packages: stored blocks for incompressible
# layers (zlib-rs's level 1 Huffman-codes them, 4.8 CPU s per GB of inflate: docs/benchmarks.md)
"$ferry" pack --from "$work/c/layout" --metadata "$work/c/package.yaml" -o "$work/c0.tgz" >/dev/null
rm -rf "$work/c/layout"
gzip -dc "$work/c0.tgz" | gzip -1 >"$work/c.tgz"
rm -f "$work/c0.tgz"
tgz=$work/c.tgz

uptime_start=$(uptime)

echo "== ferry" >&2
fresh_registry
measure "dry run" ferry -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet --dry-run
measure cold ferry -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet --output json
cp "$work/last.out" "$work/cold.json"
measure warm ferry -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet
done_registry "$regdir"
fresh_registry; h1=$h; r1=$regdir
fresh_registry; h2=$h; r2=$regdir
measure dr "ferry fan-out (--standby-registry)" -- "$ferry" push "$tgz" --dest-repo "$h1" \
  --plain --standby-registry "$h2" --standby-plain --quiet
done_registry "$r1"; done_registry "$r2"

echo "== tar xzf + skopeo x4, and the floor" >&2
skopeo_all() { # every image of the extracted layout, 4 in parallel
  python3 -c 'import json,sys; [print(m["annotations"]["org.opencontainers.image.ref.name"]) for m in json.load(open(sys.argv[1]+"/index.json"))["manifests"]]' "$1" |
    xargs -P4 -I{} sh -c 'r="{}"; skopeo copy --quiet --all --dest-tls-verify=false "oci:$0:$r" "docker://$1/${r#*/}"' "$1" "$2"
}
export -f skopeo_all
fresh_registry
measure cold "tar xzf + skopeo x4" -- bash -c "mkdir -p $work/x && tar xzf $tgz -C $work/x && skopeo_all $work/x/images $h"
measure warm "skopeo x4" -- bash -c "skopeo_all $work/x/images $h"
done_registry "$regdir"
fresh_registry; h1=$h; r1=$regdir
fresh_registry; h2=$h; r2=$regdir
measure dr "tar xzf + skopeo x4, to each registry" -- bash -c "rm -rf $work/x && mkdir -p $work/x && tar xzf $tgz -C $work/x && skopeo_all $work/x/images $h1 && skopeo_all $work/x/images $h2"
done_registry "$r1"; done_registry "$r2"
cat >"$work/curlup.sh" <<'CURL'
#!/bin/bash
host=$1 f=$2
loc=$(curl -sf -X POST -D - -o /dev/null "http://$host/v2/floor/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
case "$loc" in http*) ;; *) loc="http://$host$loc" ;; esac
curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$f" "$loc&digest=sha256:$(basename "$f")" -o /dev/null
CURL
chmod +x "$work/curlup.sh"
fresh_registry
measure floor "curl x4 (extracted blobs, monolithic)" -- bash -c "ls $work/x/images/blobs/sha256/* | xargs -P4 -I{} $work/curlup.sh $h {}"
done_registry "$regdir"
bytes=$(du -sb "$work/x/images/blobs" | cut -f1)
nblobs=$(ls "$work/x/images/blobs/sha256" | wc -l)
tgz_bytes=$(stat -c %s "$tgz")

python3 - "$results" "$bytes" "$nblobs" "$images" "$tgz_bytes" "$uptime_start" "$(uptime)" >"$work/report.md" <<'PY'
import sys, datetime, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
size, nblobs, images, tgz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
gb = size / 1e9
get = lambda sc, tool: next((r for r in rows if r[0] == sc and r[1].startswith(tool)), None)
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores (shared): {images} images, "
      f"{nblobs} blobs, {size/1e9:.2f} GB of blobs; .tgz {tgz/1e9:.2f} GB at gzip -1.  ")
print(f"Load: `{sys.argv[6].strip()}` at the start, `{sys.argv[7].strip()}` at the end; "
      "the load column is the 1-minute load when each row started.  ")
print("Command: `scripts/bench.sh --scale`\n")
print("| scenario | tool | wall s | MB/s | CPU s (user + sys) | CPU s per GB | peak RSS MB | load | note |")
print("|---|---|---:|---:|---|---:|---:|---:|---|")
for sc, tool, wall, user, sys_, rss, load in rows:
    w, cpu = float(wall), float(user) + float(sys_)
    note = ""
    if not tool.startswith("ferry"):
        f = get(sc, "ferry")
        if f and sc != "floor":
            note = f"ferry is {w/float(f[2]):.2f}x faster"
        if sc == "floor":
            note = f"ferry cold / floor = {float(get('cold', 'ferry')[2])/w:.2f}"
    if sc == "dr" and tool.startswith("ferry"):
        note = f"{w/float(get('cold', 'ferry')[2]):.2f}x one push"
    mbs = f"{size/1e6/w:.0f}" if sc in ("cold", "dr", "floor") else ""
    print(f"| {sc} | {tool} | {wall} | {mbs} | {cpu:.1f} ({user} + {sys_}) | {cpu/gb:.2f} | {rss} | {load} | {note} |")
PY
if [ "$out" != "-" ]; then
  write_block "$out" bench-scale 'Field scale: 1,000 images (`scripts/bench.sh --scale`)' "$work/report.md"
fi
cat "$work/report.md"
