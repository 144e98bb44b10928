# Shared by scripts/*.sh: install what is missing (Debian), find a free port, run a
# throwaway registry.

# install_missing CMD:PACKAGE ...
install_missing() {
  local need=() pair
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
  done
  [ ${#need[@]} -eq 0 ] && return 0
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "installing: ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq >/dev/null
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_registry DIR PORT [USER PASSWORD]: Distribution registry on 127.0.0.1:PORT, storage in
# DIR; plain HTTP, or with USER and PASSWORD: TLS with a self-signed certificate made by
# openssl (DIR/ca.pem, the CA to trust) and htpasswd (bcrypt) logins, as docker's registry
# docs set one up.
start_registry() {
  local dir=$1 port=$2 user=${3:-} password=${4:-}
  mkdir -p "$dir/data"
  cat >"$dir/config.yml" <<CFG
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
CFG
  if [ -n "$user" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
      -addext subjectAltName=IP:127.0.0.1 -keyout "$dir/key.pem" -out "$dir/ca.pem" 2>/dev/null
    printf %s "$password" | htpasswd -iBn "$user" >"$dir/htpasswd"
    cat >>"$dir/config.yml" <<CFG
  tls:
    certificate: $dir/ca.pem
    key: $dir/key.pem
auth:
  htpasswd:
    realm: basic-realm
    path: $dir/htpasswd
CFG
  fi
  docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 &
  echo $! >"$dir/pid"
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "registry did not start:" >&2
  cat "$dir/registry.log" >&2
  return 1
}

stop_registry() {
  local dir=$1
  [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true
  rm -f "$dir/pid"
}

# write_block FILE NAME TITLE REPORT: puts REPORT's text between the `<!-- NAME:begin -->` and
# `<!-- NAME:end -->` markers of FILE (appended under "## TITLE" when the markers are missing).
write_block() {
  python3 - "$@" <<'PY'
import sys
path, name, title, rep = sys.argv[1], sys.argv[2], sys.argv[3], open(sys.argv[4]).read()
doc = open(path).read()
b, e = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
if b not in doc:
    doc += f"\n## {title}\n\n{b}\n{e}\n"
head, rest = doc.split(b, 1); tail = rest.split(e, 1)[1]
open(path, "w").write(head + b + "\n" + rep + e + tail)
PY
  echo "results written to $1" >&2
}
