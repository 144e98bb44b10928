#!/usr/bin/env bash
# Benchmarks ferry against skopeo and the physical floors, side by side in one run.
#   scripts/bench.sh           full run (~3-5 min on 2 cores)
#   scripts/bench.sh --quick   small corpus (~1 min)
#   BENCH_PACKAGE=1 scripts/bench.sh   also `ferry package build` vs skopeo sync + tar (bench-package.sh)
#   scripts/bench.sh --scale   only the field-scale run: 1,000 images, ~3 GB (scripts/bench-scale.sh,
#                              10-20 min on 2 cores)
# Writes the results between the markers in docs/benchmarks.md (full run) or prints them
# (--quick, or BENCH_OUT=file to choose). Cleans up its registries, network namespace and
# temp storage even when interrupted.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 curl:curl \
  /usr/bin/time:time ip:iproute2 tc:iproute2

[ "${1:-}" = "--scale" ] && exec scripts/bench-scale.sh
quick=0
[ "${1:-}" = "--quick" ] && quick=1
if [ $quick = 1 ]; then images=6; scale=0.25; scales="1 2"; else images=12; scale=0.5; scales="1 2 4"; fi
out=${BENCH_OUT:-}
[ -z "$out" ] && [ $quick = 0 ] && out=docs/benchmarks.md

cargo build --release --quiet
ferry=$PWD/target/release/ferry
work=$(mktemp -d /tmp/ferry-bench.XXXXXX)
ns=ferrybench$$
results=$work/results.tsv
: >"$results"

cleanup() {
  set +e
  for p in "$work"/reg*/pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  [ -n "${bgpid:-}" ] && kill -9 "$bgpid" 2>/dev/null
  for i in 1 2; do
    ip netns pids "$ns$i" 2>/dev/null | xargs -r kill 2>/dev/null
    ip link del "fb$$$i" 2>/dev/null
    ip netns del "$ns$i" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lo_tx() { cat /sys/class/net/lo/statistics/tx_bytes; }

# fresh_registry: a new, empty registry on loopback; sets $h (host:port) and $regdir
n_reg=0
fresh_registry() {
  n_reg=$((n_reg + 1))
  regdir=$work/reg$n_reg
  local p
  p=$(free_port)
  start_registry "$regdir" "$p" >&2
  h="127.0.0.1:$p"
}

# measure SCENARIO TOOL BYTES_FN -- CMD...: wall, CPU (user+sys, children included), peak RSS
measure() {
  local scenario=$1 tool=$2 bytesfn=$3
  shift 4
  local b0 b1
  b0=$($bytesfn)
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/last.out" 2>"$work/last.err" || {
    echo "FAILED: $scenario $tool" >&2; cat "$work/last.err" >&2; return 1; }
  b1=$($bytesfn)
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" \
    "$(python3 -c "print(round($user+$sys,2))")" "$((rss / 1024))" "$((b1 - b0))" >>"$results"
  echo "  $scenario / $tool: ${wall}s" >&2
}

make_corpus() { # make_corpus DIR IMAGES
  "$ferry" dev corpus "$1" --images "$2" --scale "$scale" >/dev/null
  "$ferry" pack --from "$1/layout" --metadata "$1/package.yaml" -o "$1.tgz" >/dev/null
}

refs() { # refs LAYOUT -> full source references
  python3 -c 'import json,sys; [print(m["annotations"]["org.opencontainers.image.ref.name"]) for m in json.load(open(sys.argv[1]+"/index.json"))["manifests"]]' "$1"
}

skopeo_all() { # skopeo_all LAYOUT HOST: every image, 4 in parallel
  refs "$1" | xargs -P4 -I{} sh -c 'r="{}"; skopeo copy --quiet --all --dest-tls-verify=false "oci:$0:$r" "docker://$1/${r#*/}"' "$1" "$2"
}
export -f refs skopeo_all

echo "== corpus: $images images, scale $scale" >&2
make_corpus "$work/c1" "$images"
corpus_bytes=$(du -sb "$work/c1/layout/blobs" | cut -f1)
tgz=$work/c1.tgz

echo "== 1. cold push from .tgz (loopback)" >&2
fresh_registry; measure cold ferry lo_tx -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet
ferry_host=$h
fresh_registry
measure cold "tar xzf + skopeo x4" lo_tx -- bash -c "mkdir -p $work/x && tar xzf $tgz -C $work/x && skopeo_all $work/x/images $h"
skopeo_host=$h
fresh_registry; measure cold "skopeo x4 (already extracted)" lo_tx -- bash -c "skopeo_all $work/x/images $h"

echo "== 2. floor: curl monolithic uploads x4" >&2
cat >"$work/curlup.sh" <<'CURL'
#!/bin/bash
host=$1 f=$2
loc=$(curl -sf -X POST -D - -o /dev/null "http://$host/v2/floor/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
case "$loc" in http*) ;; *) loc="http://$host$loc" ;; esac
curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$f" "$loc&digest=sha256:$(basename "$f")" -o /dev/null
CURL
chmod +x "$work/curlup.sh"
fresh_registry
measure floor "curl x4" lo_tx -- bash -c "ls $work/x/images/blobs/sha256/* | xargs -P4 -I{} $work/curlup.sh $h {}"

echo "== 3. warm re-push (everything present)" >&2
measure warm ferry lo_tx -- "$ferry" push "$tgz" --dest-repo "$ferry_host" --plain --quiet
measure warm "skopeo x4" lo_tx -- bash -c "skopeo_all $work/x/images $skopeo_host"

echo "== 4. resume: SIGKILL at ~50%, then re-run" >&2
fresh_registry
start=$(date +%s.%N)
"$ferry" push "$tgz" --dest-repo "$h" --plain --quiet --state-dir "$work/state" >/dev/null 2>&1 &
bgpid=$!
half=$((corpus_bytes / 2))
while [ "$(du -sb "$regdir/data" 2>/dev/null | cut -f1)" -lt "$half" ]; do sleep 0.02; done
kill -9 "$bgpid"; wait "$bgpid" 2>/dev/null || true; bgpid=
killed=$(date +%s.%N)
measure resume "ferry re-run after kill" lo_tx -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet --state-dir "$work/state"
echo "resume_kill_after $(python3 -c "print(round($killed-$start,2))")" >"$work/resume"

echo "== 5. over a 1 Gbit/s link (registry in its own network namespace, tbf on the veth)" >&2
# make_link I: namespace $ns-I behind veth fb<pid>I (host side) shaped to 1 Gbit/s;
# the registry side is 10.250.<x>.2 (a test host of our own, inside our sandbox)
declare -A nets
make_link() {
  local i=$1 dev=fb$$$1 x
  ip netns add "$ns$i"
  ip link add "$dev" type veth peer name "${dev}p"
  ip link set "${dev}p" netns "$ns$i"
  x=$(((RANDOM % 100) * 2 + i))
  ip addr add "10.250.$x.1/30" dev "$dev"
  ip link set "$dev" up
  ip netns exec "$ns$i" ip addr add "10.250.$x.2/30" dev "${dev}p"
  ip netns exec "$ns$i" ip link set "${dev}p" up
  ip netns exec "$ns$i" ip link set lo up
  tc qdisc add dev "$dev" root tbf rate 1gbit burst 512kb latency 100ms
  nets[$i]=10.250.$x
}
veth_tx() { local i=${1:-1}; cat "/sys/class/net/fb$$$i/statistics/tx_bytes"; }
veth_tx_both() { echo $(($(veth_tx 1) + $(veth_tx 2))); }
ns_registry() { # ns_registry I: a fresh registry in namespace I; sets $h and $regdir
  local i=${1:-1}
  n_reg=$((n_reg + 1))
  regdir=$work/reg$n_reg
  mkdir -p "$regdir/data"
  sed "s|127.0.0.1:[0-9]*|${nets[$i]}.2:5000|; s|rootdirectory: .*|rootdirectory: $regdir/data|" "$work/reg1/config.yml" >"$regdir/config.yml"
  ip netns exec "$ns$i" docker-registry serve "$regdir/config.yml" >"$regdir/registry.log" 2>&1 &
  echo $! >"$regdir/pid"
  for _ in $(seq 100); do curl -sf "http://${nets[$i]}.2:5000/v2/" >/dev/null && break; sleep 0.1; done
  h="${nets[$i]}.2:5000"
}
make_link 1
make_link 2
ns_registry; measure link ferry veth_tx -- "$ferry" push "$tgz" --dest-repo "$h" --plain --quiet
stop_registry "$regdir"
ns_registry; measure link "skopeo x4 (already extracted)" veth_tx -- bash -c "skopeo_all $work/x/images $h"
stop_registry "$regdir"
ns_registry; measure link "curl x4" veth_tx -- bash -c "ls $work/x/images/blobs/sha256/* | xargs -P4 -I{} $work/curlup.sh $h {}"
stop_registry "$regdir"
# raw TCP through the same shaped link: what one TCP stream can carry, no HTTP, no registry
ip netns exec "${ns}1" python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5001)); s.listen(1); c,_=s.accept()
while c.recv(1<<20): pass' "${nets[1]}.2" &
sleep 0.3
measure link "raw TCP (python socket)" veth_tx -- python3 -c 'import socket,sys; s=socket.create_connection((sys.argv[1],5001)); b=b"x"*(1<<20); n=int(sys.argv[2])
for _ in range(n>>20): s.sendall(b)
s.close()' "${nets[1]}.2" "$corpus_bytes"
echo "link_floor_s $(python3 -c "print(round($corpus_bytes/125e6,2))")" >>"$work/resume"

echo "== 6. DR fan-out: two registries, each behind its own 1 Gbit/s link" >&2
ns_registry 1; h1=$h; r1=$regdir
ns_registry 2; h2=$h; r2=$regdir
measure dr "ferry fan-out (--standby-registry)" veth_tx_both -- "$ferry" push "$tgz" --dest-repo "$h1" --standby-registry "$h2" --standby-plain --plain --quiet
stop_registry "$r1"; stop_registry "$r2"
ns_registry 1; h1=$h; r1=$regdir
ns_registry 2; h2=$h; r2=$regdir
measure dr "ferry, two sequential pushes" veth_tx_both -- bash -c "'$ferry' push '$tgz' --dest-repo '$h1' --plain --quiet && '$ferry' push '$tgz' --dest-repo '$h2' --plain --quiet"
stop_registry "$r1"; stop_registry "$r2"

echo "== 7. scaling" >&2
for s in $scales; do
  if [ "$s" = 1 ]; then c=$tgz; else make_corpus "$work/c$s" $((images * s)); c=$work/c$s.tgz; fi
  fresh_registry; measure "scale ${s}x" ferry lo_tx -- "$ferry" push "$c" --dest-repo "$h" --plain --quiet
  stop_registry "$regdir"; rm -rf "$regdir/data"
  [ "$s" = 1 ] || rm -rf "$work/c$s" "$c"
done

python3 - "$results" "$work/resume" "$corpus_bytes" "$quick" "$*" >"$work/report.md" <<'PY'
import sys, datetime, subprocess, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
extra = dict(l.split() for l in open(sys.argv[2]))
corpus = int(sys.argv[3]); quick = sys.argv[4] == "1"
def v(cmd):
    try: return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip().splitlines()[0]
    except Exception: return "?"

get = lambda sc, tool: next((r for r in rows if r[0] == sc and r[1] == tool), None)
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores; corpus {corpus/1e6:.0f} MB of blobs"
      f"{' (quick)' if quick else ''}.  ")
print(f"{v('target/release/ferry --version')}; {v('skopeo --version')}; {v('docker-registry --version')}; {v('curl --version')}.  ")
print(f"Command: `scripts/bench.sh{' --quick' if quick else ''}`\n")
print("| scenario | tool | wall s | CPU s | peak RSS MB | bytes sent MB | ferry is |")
print("|---|---|---:|---:|---:|---:|---|")
for sc, tool, wall, cpu, rss, b in rows:
    note = ""
    f = get(sc, "ferry")
    if tool != "ferry" and f and sc in ("cold", "floor", "warm", "link"):
        note = f"{float(wall)/max(float(f[2]),0.001):.2f}x faster than this" if float(wall) >= float(f[2]) else f"{float(f[2])/max(float(wall),0.001):.2f}x slower than this"
    if sc == "floor":
        fc = get("cold", "ferry")
        note = f"ferry cold / floor = {float(fc[2])/float(wall):.2f}"
    if sc == "link" and tool == "ferry":
        raw = get("link", "raw TCP (python socket)")
        note = f"ferry / wire floor ({extra['link_floor_s']} s at 125 MB/s) = {float(wall)/float(extra['link_floor_s']):.2f}"
        if raw:
            note += f"; ferry / raw TCP = {float(wall)/float(raw[2]):.2f}"
    if sc == "dr" and tool.startswith("ferry fan-out"):
        seq = get("dr", "ferry, two sequential pushes"); single = get("link", "ferry")
        note = f"fan-out / single push = {float(wall)/float(single[2]):.2f}; two sequential pushes take {float(seq[2])/float(wall):.2f}x as long"
    if sc == "resume":
        note = f"killed after {extra['resume_kill_after']} s; re-run re-sent {int(b)/1e6:.0f} MB of {corpus/1e6:.0f} MB"
    print(f"| {sc} | {tool} | {wall} | {cpu} | {rss} | {int(b)/1e6:.1f} | {note} |")
PY

if [ -n "$out" ]; then
  write_block "$out" bench "Latest results" "$work/report.md"
fi
cat "$work/report.md"

# Platform side (fake platform of the tests, real registries): many packages vs one, and
# resources for 20 clusters with 5 ms per API call. Printed; copied into docs/benchmarks.md.
echo "platform scenarios:" >&2
cargo bench --quiet --bench platform 2>/dev/null

# Sync of a packed core package (storage tree + nested plugins) and its DR fan-out.
scripts/bench-sync.sh $([ $quick = 1 ] && echo --quick)

# A distant link (40 ms RTT, 1 Gbit/s) and many small blobs.
scripts/bench-latency.sh $([ $quick = 1 ] && echo --quick)

# Opt-in: `ferry package build` against skopeo sync + tar czf (BENCH_PACKAGE=1).
if [ "${BENCH_PACKAGE:-0}" = 1 ]; then
  scripts/bench-package.sh $([ $quick = 1 ] && echo --quick)
fi

# The streaming ceiling: ferry alone, into a registry that discards the bytes.
echo "ceiling (discard registry):" >&2
cargo bench --quiet --bench ceiling 2>/dev/null
