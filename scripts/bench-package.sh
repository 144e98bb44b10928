#!/usr/bin/env bash
# `ferry package build` (registry → verified → .tgz in one pass) against what the connected
# side does without it: `skopeo sync --dest dir` of every image, then `tar czf` of the
# directory. Same images (the bench corpus, pushed to a loopback registry), same run; wall
# time, CPU, peak RSS and peak disk (sampled every 0.1 s under the work directory).
#   scripts/bench-package.sh [--quick]       (scripts/bench.sh runs it with BENCH_PACKAGE=1)
# Writes the table between the bench-package markers of docs/benchmarks.md (full run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 /usr/bin/time:time

quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then images=6; scale=0.25; else images=12; scale=0.5; fi
out=${BENCH_OUT:-}
[ -z "$out" ] && [ $quick = 0 ] && out=docs/benchmarks.md

cargo build --release --quiet
ferry=$PWD/target/release/ferry
work=$(mktemp -d /tmp/ferry-bench-package.XXXXXX)
results=$work/results.tsv
: >"$results"
cleanup() {
  set +e
  [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null
  for p in "$work"/*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure TOOL DIR -- CMD...: wall, CPU, peak RSS, peak bytes under DIR, final bytes under DIR
measure() {
  local tool=$1 dir=$2; shift 3
  mkdir -p "$dir"
  ( peak=0; while :; do
      n=$(du -sb "$dir" 2>/dev/null | cut -f1); [ "${n:-0}" -gt "$peak" ] && peak=$n && echo "$peak" >"$work/peak"
      sleep 0.1; done ) & sampler=$!
  echo 0 >"$work/peak"
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/last.out" 2>"$work/last.err" || {
    echo "FAILED: $tool" >&2; cat "$work/last.err" >&2; return 1; }
  kill "$sampler"; wait "$sampler" 2>/dev/null || true; sampler=
  local final; final=$(du -sb "$dir" | cut -f1)
  local peak; peak=$(cat "$work/peak"); [ "$final" -gt "$peak" ] && peak=$final
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$tool" "$wall" "$(python3 -c "print(round($user+$sys,2))")" \
    "$((rss / 1024))" "$peak" "$final" >>"$results"
  echo "  $tool: ${wall}s" >&2
}

echo "== the source registry: $images images of the bench corpus and a chart naming them" >&2
"$ferry" dev corpus "$work/corpus" --images "$images" --scale "$scale" >/dev/null
"$ferry" pack --from "$work/corpus/layout" --metadata "$work/corpus/package.yaml" -o "$work/corpus.tgz" >/dev/null
regdir=$work/reg
start_registry "$regdir" "$(free_port)" >&2
h=127.0.0.1:$(sed -n 's/.*addr: 127.0.0.1:\([0-9]*\).*/\1/p' "$regdir/config.yml")
"$ferry" push "$work/corpus.tgz" --dest-repo "$h" --plain --quiet >/dev/null
rm -f "$work/corpus.tgz"
python3 - "$work/corpus/layout/index.json" "$h" >"$work/repos" <<'PY'
# pushes a chart (Helm OCI artifact) whose values.yaml names every image; prints the repos
import hashlib, io, json, sys, tarfile, urllib.error, urllib.request
index = json.load(open(sys.argv[1])); h = sys.argv[2]
refs = [m["annotations"]["org.opencontainers.image.ref.name"].split("/", 1)[1] for m in index["manifests"]]
values = "global:\n  images:\n" + "".join(
    f"    img{i}:\n      repository: {r.rsplit(':', 1)[0]}\n      tag: {r.rsplit(':', 1)[1]}\n" for i, r in enumerate(refs))
chart = "apiVersion: v2\nname: bench-chart\nversion: 1.0.0\n"
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w:gz") as t:
    for name, text in [("bench-chart/Chart.yaml", chart), ("bench-chart/values.yaml", values)]:
        data = text.encode(); info = tarfile.TarInfo(name); info.size = len(data); t.addfile(info, io.BytesIO(data))
def blob(data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    r = urllib.request.urlopen(urllib.request.Request(f"http://{h}/v2/acp/bench-chart/blobs/uploads/", method="POST"))
    loc = r.headers["Location"]; loc = loc if loc.startswith("http") else f"http://{h}{loc}"
    sep = "&" if "?" in loc else "?"
    try:
        urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={d}", data=data, method="PUT", headers={"Content-Type": "application/octet-stream"}))
    except urllib.error.HTTPError as e:
        sys.exit(f"upload of {d} to {loc}: {e.code} {e.read()[:300]!r}")
    return {"digest": d, "size": len(data)}
cfg = blob(json.dumps({"name": "bench-chart", "version": "1.0.0"}).encode())
layer = blob(buf.getvalue())
m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "config": {"mediaType": "application/vnd.cncf.helm.config.v1+json", **cfg},
     "layers": [{"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip", **layer}]}
urllib.request.urlopen(urllib.request.Request(f"http://{h}/v2/acp/bench-chart/manifests/1.0.0", data=json.dumps(m).encode(),
    method="PUT", headers={"Content-Type": m["mediaType"]}))
for r in sorted({r.rsplit(":", 1)[0] for r in refs}): print(r)
PY
corpus_bytes=$(du -sb "$work/corpus/layout/blobs" | cut -f1)
rm -rf "$work/corpus"
"$ferry" package create "$work/pkg" --artifact "$h/acp/bench-chart:1.0.0" --plain >/dev/null

echo "== builds" >&2
measure "ferry package build (gzip level 0, the default)" "$work/f0" -- \
  "$ferry" package build "$work/pkg" -o "$work/f0" --plain --no-cache
rm -rf "$work/f0"
measure "ferry package build --compression-level 6" "$work/f6" -- \
  "$ferry" package build "$work/pkg" -o "$work/f6" --plain --no-cache --compression-level 6
rm -rf "$work/f6"
measure "skopeo sync --dest dir + tar czf" "$work/s" -- sh -c '
  for r in $(cat "$1/repos"); do skopeo sync --all --src docker --dest dir --src-tls-verify=false "$2/$r" "$1/s/dir" || exit 1; done
  tar czf "$1/s/images.tgz" -C "$1/s" dir && rm -rf "$1/s/dir"' sh "$work" "$h"

python3 - "$results" "$corpus_bytes" "$quick" >"$work/report.md" <<'PY'
import sys, datetime, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
corpus = int(sys.argv[2]); quick = sys.argv[3] == "1"
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores (a shared machine: "
      f"others were building and testing at the same time); {corpus/1e6:.0f} MB of blobs{' (quick)' if quick else ''}, "
      "loopback registry.  \nCommand: `scripts/bench-package.sh" + (" --quick" if quick else "") + "`\n")
print("| tool | wall s | CPU s | peak RSS MB | peak disk MB | output MB |")
print("|---|---:|---:|---:|---:|---:|")
for tool, wall, cpu, rss, peak, final in rows:
    print(f"| {tool} | {wall} | {cpu} | {rss} | {int(peak)/1e6:.0f} | {int(final)/1e6:.0f} |")
PY
[ -n "$out" ] && write_block "$out" bench-package "Package build" "$work/report.md"
cat "$work/report.md"
