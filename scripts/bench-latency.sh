#!/usr/bin/env bash
# A distant DR site: the registry in its own network namespace behind a 1 Gbit/s veth (tbf),
# reached through a proxy that delays each direction by 20 ms (40 ms RTT; no netem here).
# Corpus: ~2,000 small blobs (half under 100 kB) and a few large ones. Compares ferry with
# skopeo (extracted layout, 4 at a time), a DR push (local primary, the far registry as
# standby), and with the floors: the wire (bytes / 125 MB/s) and
# one raw TCP stream through the same proxy and link. Then the same over TLS, where Go
# registries offer HTTP/2: ferry's default (HTTP/1.1) against FERRY_HTTP2=1, on this corpus and
# on one of large blobs.
#   scripts/bench-latency.sh [--quick]      (scripts/bench.sh runs it too)
#   scripts/bench-latency.sh --many         only the many-image corpus (issue 25: 200 images of
#                                           ~4 blobs, 170 MB): near (direct, and through the
#                                           proxy at 0 ms) and far into the discard
#                                           registry, RUNS times each (default 3), alternating
#                                           with FERRY_OLD=<binary> when given; table between the
#                                           bench-latency-many markers
# Writes its table between the bench-latency markers of docs/benchmarks.md (full run).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 curl:curl \
  /usr/bin/time:time ip:iproute2 tc:iproute2 openssl:openssl

quick=0 many=0
[ "${1:-}" = "--quick" ] && quick=1
[ "${1:-}" = "--many" ] && many=1
if [ $quick = 1 ]; then blobs=400; else blobs=2000; fi
delay_ms=${DELAY_MS:-20}
out=${BENCH_OUT:-}
[ -z "$out" ] && [ $quick = 0 ] && [ -z "${FERRY_OLD:-}" ] && out=docs/benchmarks.md

cargo build --release --quiet
cargo build --release --quiet --example discard-registry --example delay-proxy
ferry=$PWD/target/release/ferry
discard=$PWD/target/release/examples/discard-registry
# examples/delay-proxy.rs: every byte held DELAY_MS in each direction (no netem here)
delay_proxy=$PWD/target/release/examples/delay-proxy
work=$(mktemp -d /tmp/ferry-bench-lat.XXXXXX)
ns=ferrylat$$ dev=fl$$
results=$work/results.tsv
: >"$results"
cleanup() {
  set +e
  for p in "$work"/*/pid "$work"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done
  ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null
  ip link del "$dev" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

measure() { # measure SCENARIO TOOL -- CMD...
  local scenario=$1 tool=$2; shift 3
  local b0 b1
  b0=$(cat "/sys/class/net/$dev/statistics/tx_bytes")
  /usr/bin/time -f '%e %U %S %M' -o "$work/time" "$@" >"$work/last.out" 2>"$work/last.err" || {
    echo "FAILED: $scenario $tool" >&2; tail -20 "$work/last.err" >&2; return 1; }
  b1=$(cat "/sys/class/net/$dev/statistics/tx_bytes")
  read -r wall user sys rss <"$work/time"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$tool" "$wall" \
    "$(python3 -c "print(round($user+$sys,2))")" "$((rss / 1024))" "$((b1 - b0))" >>"$results"
  echo "  $scenario / $tool: ${wall}s" >&2
}

if [ $many = 0 ]; then
echo "== corpus: $blobs small blobs" >&2
"$ferry" dev small-blobs "$work/small" --blobs "$blobs" >/dev/null
"$ferry" pack --from "$work/small/layout" --metadata "$work/small/package.yaml" -o "$work/small.tgz" >/dev/null
bytes=$(du -sb "$work/small/layout/blobs" | cut -f1)
nblobs=$(ls "$work/small/layout/blobs/sha256" | wc -l)
fi

# the link: namespace behind a veth shaped to 1 Gbit/s; registry side 10.251.<x>.2
ip netns add "$ns"
ip link add "$dev" type veth peer name "${dev}p"
ip link set "${dev}p" netns "$ns"
x=$((RANDOM % 200 + 1))
ip addr add "10.251.$x.1/30" dev "$dev"; ip link set "$dev" up
ip netns exec "$ns" ip addr add "10.251.$x.2/30" dev "${dev}p"
ip netns exec "$ns" ip link set "${dev}p" up
ip netns exec "$ns" ip link set lo up
tc qdisc add dev "$dev" root tbf rate 1gbit burst 512kb latency 100ms
remote=10.251.$x.2

n=0
far_registry() { # [tls|discard] a fresh registry across the link, behind the delay proxy; sets $h
  # the previous one (and its proxy) goes first: the new one takes the same address
  for p in "$work"/reg*/pid "$work"/proxy*.pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null && rm -f "$p"
  done
  for _ in $(seq 100); do curl -skf "$scheme://$remote:5000/v2/" >/dev/null || break; sleep 0.1; done
  scheme=http
  n=$((n + 1)); local d=$work/reg$n port tls=""
  mkdir -p "$d/data"
  port=$(free_port)
  if [ "${1:-}" = tls ]; then
    scheme=https
    tls=$(printf '  tls:\n    certificate: %s\n    key: %s\n' "$work/cert.pem" "$work/key.pem")
  fi
  printf 'version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s/data\nhttp:\n  addr: %s:5000\n%s\n' "$d" "$remote" "$tls" >"$d/config.yml"
  if [ "${1:-}" = discard ]; then
    ip netns exec "$ns" "$discard" "$remote:5000" >"$d/registry.log" 2>&1 &
  else
    ip netns exec "$ns" docker-registry serve "$d/config.yml" >"$d/registry.log" 2>&1 &
  fi
  echo $! >"$d/pid"
  for _ in $(seq 100); do curl -skf "$scheme://$remote:5000/v2/" >/dev/null && break; sleep 0.1; done
  "$delay_proxy" "127.0.0.1:$port" "$remote:5000" "$delay_ms" ${HANDSHAKE:+--handshake} &
  echo $! >"$work/proxy$n.pid"
  for _ in $(seq 100); do curl -skf "$scheme://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  h=127.0.0.1:$port
}
scheme=http
# the registry's certificate, for the proxy's address (the client sees 127.0.0.1)
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 2 -subj "/CN=127.0.0.1" -addext "subjectAltName=IP:127.0.0.1" 2>/dev/null

many_images() { # the many-image corpus, near and far, into fresh discard registries
  echo "== many images: 200 images of ~4 blobs" >&2
  "$ferry" dev scale "$work/many" --images 200 --mean-kb 270 >/dev/null
  "$ferry" pack --from "$work/many/layout" --metadata "$work/many/package.yaml" -o "$work/many.tgz" >/dev/null
  local mbytes mblobs runs=${RUNS:-3} bins=("$ferry") i b
  mbytes=$(du -sb "$work/many/layout/blobs" | cut -f1)
  mblobs=$(ls "$work/many/layout/blobs/sha256" | wc -l)
  [ -n "${FERRY_OLD:-}" ] && bins+=("$FERRY_OLD")
  for i in $(seq "$runs"); do
    for b in "${bins[@]}"; do
      local tool=ferry
      [ "$b" != "$ferry" ] && tool="ferry (FERRY_OLD)"
      far_registry discard
      measure "many, near" "$tool" -- "$b" push "$work/many.tgz" --dest-repo "$remote:5000" --plain --quiet
      # the same path as far (the proxy costs CPU on this machine), without the delay
      delay_ms=0 far_registry discard
      measure "many, proxy 0 ms" "$tool" -- "$b" push "$work/many.tgz" --dest-repo "$h" --plain --quiet
      far_registry discard
      measure "many, far" "$tool" -- "$b" push "$work/many.tgz" --dest-repo "$h" --plain --quiet
      HANDSHAKE=1 far_registry discard
      measure "many, far+handshake" "$tool" -- "$b" push "$work/many.tgz" --dest-repo "$h" --plain --quiet
    done
  done
  python3 - "$results" "$mbytes" "$mblobs" "$delay_ms" >"$work/many.md" <<'PY'
import sys, datetime, os, statistics
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.startswith("many")]
size, nblobs, delay = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
wire = size / 125e6
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores; 200 images, {nblobs} blobs, {size/1e6:.0f} MB;"
      f" {delay} ms each way (RTT {2*int(delay)} ms), 1 Gbit/s, into the discard registry. Wire floor {wire:.2f} s."
      f" Command: `scripts/bench-latency.sh --many`\n")
print("| tool | near s (no delay, no proxy) | no delay, through the proxy s | far s (40 ms RTT) | far, x wire floor | far / no delay (proxy) | far / near | far + handshake s | CPU s (far) | peak RSS MB (far) |")
print("|---|---|---|---|---:|---:|---:|---|---:|---:|")
for tool in dict.fromkeys(r[1] for r in rows):
    near = [float(r[2]) for r in rows if r[1] == tool and r[0] == "many, near"]
    far = [(float(r[2]), r[3], r[4]) for r in rows if r[1] == tool and r[0] == "many, far"]
    hs = [float(r[2]) for r in rows if r[1] == tool and r[0] == "many, far+handshake"]
    p0 = [float(r[2]) for r in rows if r[1] == tool and r[0] == "many, proxy 0 ms"]
    n, f, z = statistics.median(near), statistics.median(x[0] for x in far), statistics.median(p0)
    cpu = statistics.median(float(x[1]) for x in far)
    rss = max(int(x[2]) for x in far)
    print(f"| {tool} | {n:.2f} (runs: {', '.join(f'{x:.2f}' for x in near)}) | {z:.2f} (runs: {', '.join(f'{x:.2f}' for x in p0)}) | {f:.2f} (runs: {', '.join(f'{x[0]:.2f}' for x in far)}) | {f/wire:.2f} | {f/z:.3f} | {f/n:.3f} | {statistics.median(hs):.2f} (runs: {', '.join(f'{x:.2f}' for x in hs)}) | {cpu} | {rss} |")
PY
  cat "$work/many.md"
}
if [ $many = 1 ]; then
  many_images
  [ -n "$out" ] && write_block "$out" bench-latency-many 'Many images at 40 ms RTT (`scripts/bench-latency.sh --many`)' "$work/many.md"
  exit 0
fi

echo "== floors" >&2
port=$(free_port)
ip netns exec "$ns" python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5001)); s.listen(1); c,_=s.accept()
while c.recv(1<<20): pass
c.sendall(b"k"); c.close()' "$remote" &
"$delay_proxy" "127.0.0.1:$port" "$remote:5001" "$delay_ms" &
echo $! >"$work/rawproxy.pid"
sleep 0.5
measure floor "raw TCP through proxy + link (one stream)" -- python3 -c 'import socket,sys; s=socket.create_connection(("127.0.0.1",int(sys.argv[1]))); b=b"x"*(1<<20); n=int(sys.argv[2])
for _ in range(n>>20): s.sendall(b)
s.shutdown(socket.SHUT_WR); s.recv(1)' "$port" "$bytes"

echo "== the same link without the delay: what the registry itself allows" >&2
far_registry
measure near "ferry, no delay (registry-bound floor)" -- "$ferry" push "$work/small.tgz" --dest-repo "$remote:5000" --plain --quiet

echo "== push over the distant link" >&2
far_registry
measure far ferry -- "$ferry" push "$work/small.tgz" --dest-repo "$h" --plain --quiet
echo "== DR: a local primary and the distant standby, fed from one read" >&2
far_registry
start_registry "$work/local" "$(free_port)" >&2
primary=127.0.0.1:$(sed -n 's/.*addr: 127.0.0.1:\([0-9]*\).*/\1/p' "$work/local/config.yml")
measure "far, DR" "ferry, local primary + far standby" -- "$ferry" push "$work/small.tgz" \
  --dest-repo "$primary" --plain --standby-registry "$h" --standby-plain --quiet
echo "== ferry alone over the same link: a registry that stores nothing (examples/discard-registry.rs)" >&2
far_registry discard
measure "near, discard registry" ferry -- "$ferry" push "$work/small.tgz" --dest-repo "$remote:5000" --plain --quiet
far_registry discard
measure "far, discard registry" ferry -- "$ferry" push "$work/small.tgz" --dest-repo "$h" --plain --quiet
far_registry discard
lport=$(free_port)
"$discard" "127.0.0.1:$lport" >"$work/local-discard.log" 2>&1 &
echo $! >"$work/local-discard.pid"
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$lport/v2/" >/dev/null && break; sleep 0.1; done
measure "far, DR, discard registries" "ferry, local primary + far standby" -- "$ferry" push \
  "$work/small.tgz" --dest-repo "127.0.0.1:$lport" --plain --standby-registry "$h" \
  --standby-plain --quiet
far_registry
cat >"$work/skopeo_all.sh" <<'SK'
#!/bin/bash
python3 -c 'import json,sys; [print(m["annotations"]["org.opencontainers.image.ref.name"]) for m in json.load(open(sys.argv[1]+"/index.json"))["manifests"]]' "$1" |
  xargs -P4 -I{} sh -c 'r="{}"; skopeo copy --quiet --all --dest-tls-verify=false "oci:$0:$r" "docker://$1/${r#*/}"' "$1" "$2"
SK
chmod +x "$work/skopeo_all.sh"
measure far "skopeo x4 (extracted layout)" -- "$work/skopeo_all.sh" "$work/small/layout" "$h"

echo "== over TLS: HTTP/1.1 (default) against HTTP/2" >&2
"$ferry" dev corpus "$work/large" --images 8 --scale 0.5 >/dev/null
"$ferry" pack --from "$work/large/layout" --metadata "$work/large/package.yaml" -o "$work/large.tgz" >/dev/null
for corpus in small large; do
  far_registry tls
  measure "far, TLS, $corpus" "ferry (HTTP/1.1)" -- "$ferry" push "$work/$corpus.tgz" --dest-repo "$h" --ca-file "$work/cert.pem" --quiet
  far_registry tls
  measure "far, TLS, $corpus" "ferry FERRY_HTTP2=1" -- env FERRY_HTTP2=1 "$ferry" push "$work/$corpus.tgz" --dest-repo "$h" --ca-file "$work/cert.pem" --quiet
done

large=$(du -sb "$work/large/layout/blobs" | cut -f1)
python3 - "$results" "$bytes" "$nblobs" "$delay_ms" "$quick" "$large" >"$work/report.md" <<'PY'
import sys, datetime, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
size, nblobs, delay, quick = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5] == "1"
large = int(sys.argv[6])
wire = size / 125e6
get = lambda t: next(r for r in rows if r[1].startswith(t))
get_far_discard = lambda: next(r for r in rows if r[0] == "far, discard registry")
ferry = float(next(r for r in rows if r[1] == "ferry")[2])
print(f"Run {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores; {nblobs} blobs, {size/1e6:.0f} MB;"
      f" {delay} ms each way (RTT {2*int(delay)} ms), 1 Gbit/s{' (quick)' if quick else ''}. Wire floor {wire:.2f} s"
      f" (large-blob corpus: {large/1e6:.0f} MB, {large/125e6:.2f} s)."
      f" Command: `scripts/bench-latency.sh{' --quick' if quick else ''}`\n")
print("| scenario | tool | wall s | CPU s | peak RSS MB | bytes on the link MB | note |")
print("|---|---|---:|---:|---:|---:|---|")
near = float(get("ferry, no delay")[2])
h1 = {sc: float(w) for sc, tool, w, *_ in rows if tool == "ferry (HTTP/1.1)"}
for sc, tool, wall, cpu, rss, b in rows:
    w = float(wall)
    floor = (large if sc.endswith("large") else size) / 125e6
    note = f"{w/floor:.2f}x the wire floor"
    if tool.endswith("HTTP2=1"):
        note += f"; HTTP/1.1 is {w/h1[sc]:.2f}x faster"
    if tool == "ferry" and sc.startswith("far"):
        # against the same registry with no delay: "far" ↔ "near", "far, X" ↔ "near, X"
        ref = near if sc == "far" else float(next(r for r in rows if r[0] == "near" + sc[3:])[2])
        note += f"; {w/ref:.2f}x the same push without the delay"
    if tool.startswith("ferry, local primary"):
        alone = ferry if sc == "far, DR" else float(get_far_discard()[2])
        note += f"; {w/alone:.2f}x the far push alone"
    if tool.startswith("skopeo"):
        note += f"; ferry is {w/ferry:.2f}x faster"
    print(f"| {sc} | {tool} | {wall} | {cpu} | {rss} | {int(b)/1e6:.1f} | {note} |")
PY
if [ -n "$out" ]; then
  write_block "$out" bench-latency 'A distant link: 40 ms RTT, many small blobs (`scripts/bench-latency.sh`)' "$work/report.md"
fi
cat "$work/report.md"
