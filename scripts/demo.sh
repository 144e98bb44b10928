#!/usr/bin/env bash
# The main job end to end on the embedded fixtures: build ferry, start a throwaway registry
# on 127.0.0.1, push every fixture package, show what landed (with skopeo), push again to
# show that nothing is re-sent; then the operators' job: `ferry push --platform-address` to
# a fake platform (examples/fake-platform.rs) whose ProductBase names a registry with TLS and
# logins, checked with kubectl, and `ferry list` against it. Cleans up everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
# the tools install while cargo builds (apt mostly waits on the network)
install_missing docker-registry:docker-registry skopeo:skopeo python3:python3 \
  kubectl:kubernetes-client openssl:openssl htpasswd:apache2-utils &
installing=$!
# one build for both: the example takes the test dependencies, and one cargo run compiles
# ferry once for the two (apart, their features differ and ferry is compiled twice)
cargo build --release --quiet --bin ferry --example fake-platform
wait "$installing"
ferry=target/release/ferry
work=$(mktemp -d)
port=$(free_port)
cleanup() {
  [ -f "$work/platform.pid" ] && kill "$(cat "$work/platform.pid")" 2>/dev/null || true
  stop_registry "$work/secure"
  stop_registry "$work"
  rm -rf "$work"
}
trap cleanup EXIT
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

echo
echo "===== the operators' job: ferry push --platform-address"
# the platform's registry: TLS (its own CA) and a login, as a platform's is
sport=$(free_port) reg_user=registry-admin reg_password=Demo-Registry-Pa55
start_registry "$work/secure" "$sport" "$reg_user" "$reg_password"
echo "== registry at 127.0.0.1:$sport: TLS (CA $work/secure/ca.pem), htpasswd login $reg_user"
pport=$(free_port)
target/release/examples/fake-platform --listen "127.0.0.1:$pport" --registry "127.0.0.1:$sport" \
  --registry-user "$reg_user" --registry-password "$reg_password" --dir "$work/platform" \
  >"$work/platform.log" 2>&1 &
echo $! >"$work/platform.pid"
for _ in $(seq 100); do
  [ -f "$work/platform/ca.pem" ] && break
  sleep 0.1
done
[ -f "$work/platform/ca.pem" ] || { echo "the fake platform did not start:" >&2; cat "$work/platform.log" >&2; exit 1; }
cat "$work/platform.log"
url=https://127.0.0.1:$pport pca=$work/platform/ca.pem
# the demo login it printed (test constants, not secrets)
password=$(sed -n 's|^  login: admin / \([^ ]*\) .*|\1|p' "$work/platform.log")
token=$(sed -n 's|.* or the token \([^ ]*\)$|\1|p' "$work/platform.log")
pkg=fixtures/topolvm-operator.amd64.v2.3.0.tgz
echo
echo "== ferry push $pkg --platform-address $url --platform-username admin --platform-password-stdin --platform-ca-file $pca --ca-file $work/secure/ca.pem"
echo "   (logs in with the password; the registry comes from ProductBase, its login from the Secret)"
echo "$password" | $ferry push "$pkg" --platform-address "$url" --platform-username admin \
  --platform-password-stdin --platform-ca-file "$pca" --ca-file "$work/secure/ca.pem"
echo
# an empty kubeconfig of its own: nothing of this machine's leaks in
printf 'apiVersion: v1\nkind: Config\n' >"$work/kubeconfig"
kube() {
  kubectl --kubeconfig "$work/kubeconfig" --server "$url/kubernetes/global" \
    --certificate-authority "$pca" --token "$token" "$@"
}
echo "== kubectl get artifacts,artifactversions -n cpaas-system (on $url/kubernetes/global)"
kube get artifacts.app.alauda.io,artifactversions.app.alauda.io -n cpaas-system -o \
  custom-columns='KIND:.kind,NAME:.metadata.name,REGISTRY:.spec.registry,REPOSITORY:.spec.repository,TAG:.spec.tag,OWNER:.metadata.ownerReferences[0].name'
# the bundle image they name is in the registry
image=$(kube get artifacts.app.alauda.io/topolvm-operator -n cpaas-system -o jsonpath='{.spec.registry}/{.spec.repository}'):$(
  kube get artifactversions.app.alauda.io/topolvm-operator.v2.3.0 -n cpaas-system -o jsonpath='{.spec.tag}')
mkdir -p "$work/secure/certs" && cp "$work/secure/ca.pem" "$work/secure/certs/ca.crt"
digest=$(skopeo inspect --raw --cert-dir "$work/secure/certs" --creds "$reg_user:$reg_password" \
  "docker://$image" | sha256sum | cut -c1-16)
echo
echo "== skopeo inspect $image: manifest sha256:$digest..."
echo
echo "== ferry list --platform-address $url --platform-username admin --platform-password-stdin --output table"
echo "$password" | $ferry list --platform-address "$url" --platform-username admin \
  --platform-password-stdin --platform-ca-file "$pca" --output table --output-file "$work/apps.yaml"
