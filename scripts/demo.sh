#!/usr/bin/env bash
# The main job end to end on the embedded fixtures: build ferry, start a throwaway registry
# on 127.0.0.1, push every fixture package, show what landed (with skopeo), push again to
# show that nothing is re-sent, and clean up.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3
cargo build --release --quiet
ferry=target/release/ferry
work=$(mktemp -d)
port=$(free_port)
trap 'stop_registry "$work"; rm -rf "$work"' EXIT
start_registry "$work" "$port"
echo "== registry at 127.0.0.1:$port (storage $work/data)"
echo "== ferry show fixtures/oam-application.amd64.v4.2.1.tgz --all"
$ferry show fixtures/oam-application.amd64.v4.2.1.tgz --all
echo
echo "== ferry push fixtures/ --dest-repo 127.0.0.1:$port --plain"
$ferry push fixtures/ --dest-repo "127.0.0.1:$port" --plain
echo
echo "== what landed (skopeo)"
for pkg in fixtures/*.tgz; do
  $ferry show "$pkg" --all --output json |
    python3 -c 'import json,sys; [print(i.split("/",1)[1]) for i in json.load(sys.stdin)["images"]]'
done | sort -u | while read -r ref; do
  digest=$(skopeo inspect --raw --tls-verify=false "docker://127.0.0.1:$port/$ref" | sha256sum | cut -c1-16)
  printf '  %-45s manifest sha256:%s...\n' "$ref" "$digest"
done
echo
echo "== push again: everything is present, nothing is re-sent"
$ferry push fixtures/ --dest-repo "127.0.0.1:$port" --plain --quiet | tail -4
