#!/usr/bin/env bash
# Test control plane for nudge's controller / webhook tests: a real etcd + kube-apiserver +
# kube-controller-manager (Kubernetes 1.20.2 built from Debian bookworm's source package) on
# loopback. Built from `apt-get source kubernetes` (vendored reflect2 1.0.1 swapped for Debian's
# 1.0.2, which kube-apiserver needs under Go >= 1.18), `make WHAT=...` in GOPATH mode.
#
#   scripts/test-cluster.sh install-deps   # apt packages + deb-src entries (idempotent)
#   scripts/test-cluster.sh build          # binaries into the version-keyed cache (no-op if cached)
#   scripts/test-cluster.sh start DIR      # start a cluster with its state in DIR, wait until ready
#   scripts/test-cluster.sh status DIR     # show the processes and /readyz (exit 1 if not healthy)
#   scripts/test-cluster.sh stop DIR       # stop exactly the processes `start DIR` started
#   scripts/test-cluster.sh bin-dir        # print the directory holding the cached binaries
#   scripts/test-cluster.sh stop-component DIR NAME    # stop etcd or kube-apiserver only
#   scripts/test-cluster.sh start-component DIR NAME [ARG...]  # start it again: same flags
#                                          # (+ ARGs), port, certs, etcd data; wait for /readyz
#
# After `start DIR`, DIR/env holds KEY=VALUE lines (load with `set -a; . DIR/env; set +a`):
#   KUBECONFIG, NUDGE_TEST_APISERVER, NUDGE_TEST_TOKEN, NUDGE_TEST_CA, NUDGE_K8S_BIN,
#   NUDGE_TEST_CLUSTER_DIR, NUDGE_TEST_ETCD_PID, NUDGE_TEST_APISERVER_PID,
#   NUDGE_TEST_CONTROLLER_MANAGER_PID
#
# Environment:
#   NUDGE_K8S_CACHE          cache root (default /var/cache/nudge/k8s); binaries in $it/1.20.2/bin
#   NUDGE_K8S_BIN            use binaries from this directory instead of the cache
#   NUDGE_TEST_START_TIMEOUT seconds `start` waits for readiness (default 90)
#   NUDGE_TEST_AUDIT=1       `start` enables the API server's audit log: DIR/audit.log (JSON
#                            lines; level Metadata, RequestResponse for list/get of Secrets and
#                            ConfigMaps by the user nudge-controller)
# `start` also writes NUDGE_TEST_CONTROLLER_TOKEN to DIR/env: a second system:masters token for
# the user nudge-controller, so tests can tell the controller's requests from their own.
set -euo pipefail

readonly K8S_VERSION=1.20.2
readonly K8S_BINARIES=(kube-apiserver kube-controller-manager kubectl)
readonly APT_PACKAGES=(golang-go etcd-server dpkg-dev make rsync jq openssl
                       golang-github-modern-go-reflect2-dev)
readonly REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
CACHE_ROOT=${NUDGE_K8S_CACHE:-/var/cache/nudge/k8s}
VERSION_DIR=$CACHE_ROOT/$K8S_VERSION
BIN_DIR=${NUDGE_K8S_BIN:-$VERSION_DIR/bin}
PROG=test-cluster.sh

die() { echo "$PROG: error: $*" >&2; exit 1; }
info() { echo "$PROG: $*" >&2; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $(( t / 1000 )); }
fmt_ms() { printf '%d.%03ds' $(( $1 / 1000 )) $(( $1 % 1000 )); }

usage() {
    sed -n '7,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

need_root() { [[ $(id -u) == 0 ]] || die "$1 needs root (apt-get / system cache dir)"; }

# ---------------------------------------------------------------------------------------------
# install-deps
# ---------------------------------------------------------------------------------------------
have_deb_src() {
    grep -Eqs '^[[:space:]]*(Types:.*deb-src|deb-src[[:space:]])' \
        /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
}

add_deb_src() {
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources \
            > /etc/apt/sources.list.d/debian-src.sources
    elif grep -Eqs '^deb[[:space:]]' /etc/apt/sources.list; then
        grep -E '^deb[[:space:]]' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            > /etc/apt/sources.list.d/debian-src.list
    else
        die "no Debian apt source found to derive deb-src entries from"
    fi
    info "added deb-src entries"
}

missing_packages() {
    local p
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
            || echo "$p"
    done
}

# Debian's version of upstream 1.20.2 is e.g. "1.20.5+really1.20.2-1.1+deb12u1".
source_versions() {
    apt-cache showsrc kubernetes 2>/dev/null | sed -n 's/^Version: //p' \
        | grep -E "^(${K8S_VERSION//./\\.}|[^ ]*really${K8S_VERSION//./\\.})[-+~]" || true
}

have_k8s_source_index() { [[ -n $(source_versions) ]]; }

cmd_install_deps() {
    need_root install-deps
    export DEBIAN_FRONTEND=noninteractive
    local updated=no missing log
    log=$(mktemp)
    # shellcheck disable=SC2064
    trap "rm -f '$log'" EXIT
    if ! have_deb_src; then add_deb_src; fi
    missing=$(missing_packages | tr '\n' ' ')
    if [[ -n $missing ]] || ! have_k8s_source_index; then
        apt-get update -qq >"$log" 2>&1 || { tail -n 20 "$log" >&2; die "apt-get update failed"; }
        updated=yes
    fi
    if [[ -n $missing ]]; then
        info "installing: $missing"
        # shellcheck disable=SC2086
        apt-get install -y -qq $missing >"$log" 2>&1 \
            || { tail -n 20 "$log" >&2; die "apt-get install failed"; }
    fi
    have_k8s_source_index \
        || die "apt has no source package kubernetes $K8S_VERSION (Debian bookworm expected)"
    [[ -d $REFLECT2_SRC ]] || die "$REFLECT2_SRC missing (golang-github-modern-go-reflect2-dev)"
    if [[ -z $missing && $updated == no ]]; then info "deps: already installed"; else info "deps: ok"; fi
}

# ---------------------------------------------------------------------------------------------
# build
# ---------------------------------------------------------------------------------------------
binaries_complete() {
    local dir=$1 b
    for b in "${K8S_BINARIES[@]}"; do [[ -x $dir/$b && -s $dir/$b ]] || return 1; done
}

cmd_build() {
    if binaries_complete "$BIN_DIR"; then echo "cached: $BIN_DIR"; return 0; fi
    [[ -z ${NUDGE_K8S_BIN:-} ]] || die "NUDGE_K8S_BIN=$NUDGE_K8S_BIN does not hold ${K8S_BINARIES[*]}"
    local t tool
    for tool in go apt-get dpkg-source make rsync flock; do
        command -v "$tool" >/dev/null || die "'$tool' not found; run: $0 install-deps"
    done
    [[ -d $REFLECT2_SRC ]] || die "$REFLECT2_SRC missing; run: $0 install-deps"
    mkdir -p "$VERSION_DIR" || die "cannot create cache dir $VERSION_DIR"

    # One build at a time per cache; a second caller waits, then finds the binaries cached.
    exec 9>"$VERSION_DIR/.build.lock"
    if ! flock -n 9; then
        info "another build holds $VERSION_DIR/.build.lock; waiting"
        flock 9
    fi
    if binaries_complete "$BIN_DIR"; then echo "cached: $BIN_DIR"; return 0; fi
    # Leftovers of an interrupted build (we hold the lock, so none is in progress).
    find "$VERSION_DIR" -mindepth 1 -maxdepth 1 -type d \
        \( -name 'build.*' -o -name 'bin.new.*' -o -name 'bin.old.*' \) \
        -exec chmod -R u+w {} + -exec rm -rf {} +

    t=$(now_ms)
    local work log src stage
    work=$(mktemp -d "$VERSION_DIR/build.XXXXXX")
    log=$VERSION_DIR/build.log
    # The source tree + Go build cache are several GB: always remove them, success or not.
    # shellcheck disable=SC2064
    trap "chmod -R u+w '$work' 2>/dev/null; rm -rf '$work'" EXIT
    trap 'exit 130' INT TERM
    : >"$log"
    info "building kubernetes $K8S_VERSION in $work (log: $log)"

    mkdir -p "$work/src" "$work/home"
    (cd "$work/src" && apt-get source -qq "kubernetes=$(source_version)") >>"$log" 2>&1 \
        || { tail -n 20 "$log" >&2; die "apt-get source kubernetes failed (run: $0 install-deps)"; }
    src=$(find "$work/src" -mindepth 1 -maxdepth 1 -type d -name "kubernetes-*" | head -n1)
    [[ -n $src && -f $src/Makefile ]] || die "unpacked source tree not found in $work/src"

    # Vendored reflect2 1.0.1 crashes kube-apiserver under Go >= 1.18 ("fatal error: fault"
    # in runtime.mapiternext); Debian's 1.0.2 is the API-compatible fix.
    rm -rf "$src/vendor/github.com/modern-go/reflect2"
    cp -r "$REFLECT2_SRC" "$src/vendor/github.com/modern-go/"
    # GOPATH mode, as debian/rules does (module mode does not build this tree).
    mkdir -p "$src/.go/src/k8s.io"
    ln -s ../../.. "$src/.go/src/k8s.io/kubernetes"

    info "compiling (nice -n 10; typically 6-14 min on 2 cores)"
    if ! (cd "$src" && env -u GOFLAGS -u GO111MODULE -u GOROOT \
            GOPATH="$src/.go" GOCACHE="$work/gocache" CGO_ENABLED=0 HOME="$work/home" \
            nice -n 10 make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kubectl") \
            >>"$log" 2>&1; then
        tail -n 30 "$log" >&2
        die "make failed after $(fmt_ms $(( $(now_ms) - t ))) (full log: $log)"
    fi
    binaries_complete "$src/_output/bin" || die "make succeeded but binaries are missing (log: $log)"
    "$src/_output/bin/kube-apiserver" --version >>"$log" 2>&1 \
        || die "built kube-apiserver does not run (log: $log)"

    # Stage next to the final location, then swap in with one rename.
    stage=$(mktemp -d "$VERSION_DIR/bin.new.XXXXXX")
    local b
    for b in "${K8S_BINARIES[@]}"; do cp "$src/_output/bin/$b" "$stage/$b"; done
    chmod 0755 "$stage" "${K8S_BINARIES[@]/#/$stage/}"
    if [[ -e $BIN_DIR ]]; then mv -T "$BIN_DIR" "$VERSION_DIR/bin.old.$$"; fi
    mv -T "$stage" "$BIN_DIR"
    rm -rf "$VERSION_DIR/bin.old.$$"

    echo "built: $BIN_DIR ($(fmt_ms $(( $(now_ms) - t ))))"
}

source_version() {
    local v
    v=$(source_versions | sort -V | tail -n1)
    [[ -n $v ]] || die "no kubernetes $K8S_VERSION source package in apt; run: $0 install-deps"
    echo "$v"
}

# ---------------------------------------------------------------------------------------------
# start / stop / status
# ---------------------------------------------------------------------------------------------
abs_dir() { # create (if needed) and print the absolute path of $1
    [[ -n ${1:-} ]] || die "missing DIR argument"
    mkdir -p "$1" || die "cannot create $1"
    (cd "$1" && pwd -P)
}

# Local ports in use (any state, IPv4 and IPv6), one per line, decimal.
used_ports() {
    local f sl local_addr rest
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        while read -r sl local_addr rest; do
            [[ $sl == sl ]] && continue
            echo $(( 16#${local_addr##*:} ))
        done <"$f"
    done
}

# Pick N distinct free ports below the ephemeral range.
pick_ports() {
    local n=$1 low used picked=() p tries=0
    read -r low _ </proc/sys/net/ipv4/ip_local_port_range
    (( low > 12000 )) || low=32768
    used=" $(used_ports | tr '\n' ' ') "
    while (( ${#picked[@]} < n )); do
        (( ++tries < 10000 )) || die "no free TCP port found"
        p=$(( 10000 + (RANDOM * 32768 + RANDOM) % (low - 10000) ))
        [[ $used == *" $p "* || " ${picked[*]-} " == *" $p "* ]] && continue
        picked+=("$p")
    done
    echo "${picked[@]}"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# PIDs file: "name pid" per line, in start order.
pid_alive() { # pid name -> true if pid runs the named binary
    local pid=$1 name=$2 exe
    [[ -d /proc/$pid ]] || return 1
    IFS= read -r -d '' exe <"/proc/$pid/cmdline" 2>/dev/null || return 1
    [[ $(basename -- "$exe") == "$name" ]]
}

launch() { # name logfile cmd... setsid: survive the caller's terminal/session.
    local name=$1 log=$2; shift 2
    setsid "$@" </dev/null >>"$log" 2>&1 &
    local pid=$! n exe
    echo "$name $pid" >>"$CLUSTER_DIR/pids"
    # Wait until the forked shell has exec'd setsid (or env) and that has exec'd the binary, so
    # that pid_alive can recognise it: under load the fork-to-exec window is long, and the PID
    # first shows this script's shell, then setsid, then the binary.
    for (( n = 0; n < 200; n++ )); do
        [[ -d /proc/$pid ]] || break
        exe=
        IFS= read -r -d '' exe <"/proc/$pid/cmdline" 2>/dev/null || true
        [[ $(basename -- "${exe:-x}") == "$name" ]] && break
        sleep 0.05
    done
}

fail_start() { # component message
    local msg=$2 log=$CLUSTER_DIR/logs/$1.log
    echo "$PROG: error: $msg" >&2
    if [[ -s $log ]]; then
        echo "---- last lines of $log ----" >&2
        tail -n 25 "$log" >&2
        echo "----" >&2
    fi
    stop_processes quiet
    exit 1
}

check_alive() { # fail if any started component died
    local name pid
    while read -r name pid; do
        pid_alive "$pid" "$name" || fail_start "$name" "$name (pid $pid) exited during start"
    done <"$CLUSTER_DIR/pids"
}

kctl() { "$BIN_DIR/kubectl" --kubeconfig "$CLUSTER_DIR/kubeconfig" --request-timeout=5s "$@"; }

gen_certs() {
    local c=$CLUSTER_DIR/certs
    mkdir -p "$c" && chmod 700 "$c"
    (
        cd "$c"
        openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
            -subj "/CN=nudge-test-ca" \
            -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
        openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr \
            -subj "/CN=kube-apiserver"
        printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc" \
            "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" >apiserver.ext
        openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
            -out apiserver.crt -days 30 -extfile apiserver.ext
        openssl genrsa -out sa.key 2048
        openssl rsa -in sa.key -pubout -out sa.pub
        rm -f apiserver.csr ca.srl
    ) >"$CLUSTER_DIR/logs/openssl.log" 2>&1 \
        || { tail -n 10 "$CLUSTER_DIR/logs/openssl.log" >&2; die "certificate generation failed"; }
}

cmd_start() {
    CLUSTER_DIR=$(abs_dir "${1:-}")
    local b
    for b in "${K8S_BINARIES[@]}"; do
        [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b missing; run: $0 build"
    done
    command -v etcd >/dev/null || die "etcd not found; run: $0 install-deps"
    command -v openssl >/dev/null || die "openssl not found; run: $0 install-deps"
    if [[ -s $CLUSTER_DIR/pids ]]; then
        local name pid
        while read -r name pid; do
            pid_alive "$pid" "$name" && die "a cluster is already running in $CLUSTER_DIR (stop it first)"
        done <"$CLUSTER_DIR/pids"
    fi
    local t0 timeout deadline
    t0=$(now_ms)
    timeout=${NUDGE_TEST_START_TIMEOUT:-90}
    [[ $timeout =~ ^[0-9]+$ ]] || die "NUDGE_TEST_START_TIMEOUT must be whole seconds"
    deadline=$(( t0 + timeout * 1000 ))

    rm -rf "$CLUSTER_DIR/etcd" "$CLUSTER_DIR/logs" "$CLUSTER_DIR/pids" "$CLUSTER_DIR/env"
    mkdir -p "$CLUSTER_DIR/logs" "$CLUSTER_DIR/etcd"
    chmod 700 "$CLUSTER_DIR/etcd"
    : >"$CLUSTER_DIR/pids"
    # Any failure from here on: stop what was started (fail_start does it for known causes).
    trap 'rc=$?; if (( rc != 0 )); then stop_processes quiet; fi' EXIT

    gen_certs
    local token ctl_token etcd_port api_port
    token=$(openssl rand -hex 24)
    ctl_token=$(openssl rand -hex 24)
    printf '%s,admin,admin,system:masters\n%s,nudge-controller,nudge-controller,system:masters\n' \
        "$token" "$ctl_token" >"$CLUSTER_DIR/certs/tokens.csv"
    chmod 600 "$CLUSTER_DIR/certs/tokens.csv"
    read -r etcd_port api_port < <(pick_ports 2)
    local api_url=https://127.0.0.1:$api_port certs=$CLUSTER_DIR/certs

    cat >"$CLUSTER_DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: nudge-test
  cluster:
    server: $api_url
    certificate-authority: $certs/ca.crt
users:
- name: admin
  user:
    token: $token
contexts:
- name: nudge-test
  context:
    cluster: nudge-test
    user: admin
current-context: nudge-test
EOF
    chmod 600 "$CLUSTER_DIR/kubeconfig"

    # etcd
    local etcd_env=()
    if [[ $(uname -m) == aarch64 ]]; then etcd_env=(env ETCD_UNSUPPORTED_ARCH=arm64); fi
    local etcd_cmd=("${etcd_env[@]}" etcd \
        --name nudge-test --data-dir "$CLUSTER_DIR/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" \
        --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls http://127.0.0.1:0 \
        --initial-advertise-peer-urls http://127.0.0.1:2380 \
        --initial-cluster nudge-test=http://127.0.0.1:2380)
    save_cmd etcd "${etcd_cmd[@]}"
    launch etcd "$CLUSTER_DIR/logs/etcd.log" "${etcd_cmd[@]}"
    until port_open "$etcd_port"; do
        check_alive
        (( $(now_ms) < deadline )) || fail_start etcd "etcd not listening on 127.0.0.1:$etcd_port after ${timeout}s"
        sleep 0.1
    done

    # kube-apiserver
    local audit=()
    if [[ ${NUDGE_TEST_AUDIT:-} == 1 ]]; then
        write_audit_policy
        audit=(--audit-policy-file "$CLUSTER_DIR/audit-policy.yaml"
               --audit-log-path "$CLUSTER_DIR/audit.log" --audit-log-format json
               --audit-log-mode blocking --audit-log-maxbackup 0)
    fi
    local api_cmd=("$BIN_DIR/kube-apiserver" "${audit[@]}" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
        --secure-port "$api_port" --insecure-port 0 --cert-dir "$certs" \
        --endpoint-reconciler-type none --service-cluster-ip-range 10.0.0.0/24 \
        --tls-cert-file "$certs/apiserver.crt" --tls-private-key-file "$certs/apiserver.key" \
        --client-ca-file "$certs/ca.crt" --token-auth-file "$certs/tokens.csv" \
        --authorization-mode RBAC \
        --service-account-key-file "$certs/sa.pub" \
        --service-account-signing-key-file "$certs/sa.key" \
        --service-account-issuer https://kubernetes.default.svc)
    save_cmd kube-apiserver "${api_cmd[@]}"
    launch kube-apiserver "$CLUSTER_DIR/logs/kube-apiserver.log" "${api_cmd[@]}"
    until kctl get --raw /readyz >/dev/null 2>&1; do
        check_alive
        if (( $(now_ms) >= deadline )); then
            local failing out
            out=$(kctl get --raw '/readyz?verbose' 2>&1) && break  # ready just now
            failing=$(grep -o '\[-\][^[:space:]\\]*' <<<"$out" | sed 's/^\[-\]//' | head -n 8 \
                | paste -sd ' ') || true
            [[ -n $failing ]] || failing=$(tail -n 1 <<<"$out")
            fail_start kube-apiserver \
                "kube-apiserver $api_url/readyz not 200 after ${timeout}s${failing:+ (failing: $failing)}"
        fi
        sleep 0.2
    done
    local t_api
    t_api=$(now_ms)

    # kube-controller-manager
    launch kube-controller-manager "$CLUSTER_DIR/logs/kube-controller-manager.log" \
        "$BIN_DIR/kube-controller-manager" \
        --kubeconfig "$CLUSTER_DIR/kubeconfig" --leader-elect=false \
        --bind-address 127.0.0.1 --secure-port 0 --port 0 \
        --service-account-private-key-file "$certs/sa.key" --root-ca-file "$certs/ca.crt" \
        --cluster-signing-cert-file "$certs/ca.crt" --cluster-signing-key-file "$certs/ca.key" \
        --controllers '*,-nodeipam,-nodelifecycle,-ttl,-bootstrapsigner,-tokencleaner'
    until kctl -n default get serviceaccount default >/dev/null 2>&1; do
        check_alive
        (( $(now_ms) < deadline )) || fail_start kube-controller-manager \
            "ServiceAccount default/default not created by kube-controller-manager after ${timeout}s"
        sleep 0.2
    done

    local etcd_pid api_pid kcm_pid
    etcd_pid=$(awk '$1=="etcd"{print $2}' "$CLUSTER_DIR/pids")
    api_pid=$(awk '$1=="kube-apiserver"{print $2}' "$CLUSTER_DIR/pids")
    kcm_pid=$(awk '$1=="kube-controller-manager"{print $2}' "$CLUSTER_DIR/pids")
    {
        printf 'KUBECONFIG=%q\n' "$CLUSTER_DIR/kubeconfig"
        printf 'NUDGE_TEST_APISERVER=%q\n' "$api_url"
        printf 'NUDGE_TEST_TOKEN=%q\n' "$token"
        printf 'NUDGE_TEST_CONTROLLER_TOKEN=%q\n' "$ctl_token"
        printf 'NUDGE_TEST_CA=%q\n' "$certs/ca.crt"
        printf 'NUDGE_K8S_BIN=%q\n' "$BIN_DIR"
        printf 'NUDGE_TEST_CLUSTER_DIR=%q\n' "$CLUSTER_DIR"
        printf 'NUDGE_TEST_ETCD_PID=%q\n' "$etcd_pid"
        printf 'NUDGE_TEST_APISERVER_PID=%q\n' "$api_pid"
        printf 'NUDGE_TEST_CONTROLLER_MANAGER_PID=%q\n' "$kcm_pid"
    } >"$CLUSTER_DIR/env.tmp"
    chmod 600 "$CLUSTER_DIR/env.tmp"
    mv "$CLUSTER_DIR/env.tmp" "$CLUSTER_DIR/env"
    trap - EXIT
    echo "ready: $api_url in $(fmt_ms $(( $(now_ms) - t0 ))) (apiserver ready $(fmt_ms $(( t_api - t0 ))));" \
        "env: $CLUSTER_DIR/env"
}

save_cmd() { # name cmd... -> DIR/NAME.cmd, NUL-separated words (for start-component)
    local name=$1; shift
    printf '%s\0' "$@" >"$CLUSTER_DIR/$name.cmd"
}

write_audit_policy() {
    cat >"$CLUSTER_DIR/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: RequestResponse
  users: [nudge-controller]
  verbs: [list, get]
  resources: [{group: "", resources: [secrets, configmaps]}]
- level: Metadata
EOF
}

component_dir() { # DIR NAME -> sets CLUSTER_DIR, checks NAME
    [[ -n ${1:-} && -d $1 ]] || die "missing or bad DIR argument"
    CLUSTER_DIR=$(cd "$1" && pwd -P)
    [[ ${2:-} == etcd || ${2:-} == kube-apiserver ]] || die "component must be etcd or kube-apiserver"
    [[ -f $CLUSTER_DIR/$2.cmd ]] || die "$CLUSTER_DIR/$2.cmd missing (cluster not started by this script)"
}

component_pid() { awk -v n="$1" '$1==n{print $2}' "$CLUSTER_DIR/pids" | tail -n1; }

cmd_stop_component() {
    component_dir "$@"
    local name=$2 pid n
    pid=$(component_pid "$name")
    [[ -n $pid ]] && pid_alive "$pid" "$name" || die "$name is not running in $CLUSTER_DIR"
    kill -TERM "$pid"
    for (( n = 0; n < 100; n++ )); do pid_alive "$pid" "$name" || break; sleep 0.1; done
    if pid_alive "$pid" "$name"; then kill -KILL "$pid"; sleep 0.2; fi
    info "stopped $name (pid $pid)"
}

cmd_start_component() {
    component_dir "$@"
    local name=$2 pid cmd=() t0 deadline timeout=${NUDGE_TEST_START_TIMEOUT:-90} var
    shift 2
    pid=$(component_pid "$name")
    [[ -n $pid ]] && pid_alive "$pid" "$name" && die "$name is already running (pid $pid)"
    mapfile -d '' -t cmd <"$CLUSTER_DIR/$name.cmd"
    t0=$(now_ms); deadline=$(( t0 + timeout * 1000 ))
    awk -v n="$name" '$1!=n' "$CLUSTER_DIR/pids" >"$CLUSTER_DIR/pids.tmp"
    mv "$CLUSTER_DIR/pids.tmp" "$CLUSTER_DIR/pids"
    launch "$name" "$CLUSTER_DIR/logs/$name.log" "${cmd[@]}" "$@"
    pid=$(component_pid "$name")
    # stop stops in reverse file order: keep etcd first so it is stopped last.
    { awk '$1=="etcd"' "$CLUSTER_DIR/pids"; awk '$1!="etcd"' "$CLUSTER_DIR/pids"; } >"$CLUSTER_DIR/pids.tmp"
    mv "$CLUSTER_DIR/pids.tmp" "$CLUSTER_DIR/pids"
    if [[ $name == etcd ]]; then var=NUDGE_TEST_ETCD_PID; else var=NUDGE_TEST_APISERVER_PID; fi
    [[ -f $CLUSTER_DIR/env ]] && sed -i "s/^$var=.*/$var=$pid/" "$CLUSTER_DIR/env"
    until kctl get --raw /readyz >/dev/null 2>&1; do
        pid_alive "$pid" "$name" \
            || { tail -n 20 "$CLUSTER_DIR/logs/$name.log" >&2; die "$name (pid $pid) exited on restart"; }
        (( $(now_ms) < deadline )) || die "API server not ready ${timeout}s after starting $name"
        sleep 0.2
    done
    info "started $name (pid $pid); API ready in $(fmt_ms $(( $(now_ms) - t0 )))"
}

# Stop what CLUSTER_DIR/pids lists, reverse start order (etcd last). Only signals a PID that
# still runs the binary it was recorded for (no stray kill after PID reuse).
stop_processes() {
    local mode=${1:-} f=$CLUSTER_DIR/pids lines=() i name pid n
    [[ -f $f ]] || return 0
    mapfile -t lines <"$f"
    for (( i = ${#lines[@]} - 1; i >= 0; i-- )); do
        read -r name pid <<<"${lines[i]}"
        [[ -n ${pid:-} ]] || continue
        if ! pid_alive "$pid" "$name"; then
            [[ $mode == quiet ]] || info "$name (pid $pid) not running"
            continue
        fi
        kill -TERM "$pid" 2>/dev/null || true
        for (( n = 0; n < 100; n++ )); do pid_alive "$pid" "$name" || break; sleep 0.1; done
        if pid_alive "$pid" "$name"; then
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        [[ $mode == quiet ]] || info "stopped $name (pid $pid)"
    done
    rm -f "$f"
    rm -rf "$CLUSTER_DIR/etcd"
}

cmd_stop() {
    [[ -n ${1:-} ]] || die "missing DIR argument"
    [[ -d $1 ]] || die "no such directory: $1"
    CLUSTER_DIR=$(cd "$1" && pwd -P)
    [[ -f $CLUSTER_DIR/pids ]] || { info "nothing to stop in $CLUSTER_DIR"; rm -rf "$CLUSTER_DIR/etcd"; return 0; }
    stop_processes
    rm -f "$CLUSTER_DIR/env"
}

cmd_status() {
    [[ -n ${1:-} ]] || die "missing DIR argument"
    [[ -d $1 ]] || die "no such directory: $1"
    CLUSTER_DIR=$(cd "$1" && pwd -P)
    [[ -s $CLUSTER_DIR/pids ]] || { echo "stopped: $CLUSTER_DIR"; return 1; }
    local name pid ok=0 rss
    while read -r name pid; do
        if pid_alive "$pid" "$name"; then
            rss=$(awk '/^VmRSS:/{printf "%d MiB", $2/1024}' "/proc/$pid/status")
            printf '%-24s pid %-8s running  rss %s\n' "$name" "$pid" "$rss"
        else
            printf '%-24s pid %-8s NOT RUNNING\n' "$name" "$pid"; ok=1
        fi
    done <"$CLUSTER_DIR/pids"
    if [[ -f $CLUSTER_DIR/env ]]; then
        local url
        url=$(sed -n 's/^NUDGE_TEST_APISERVER=//p' "$CLUSTER_DIR/env")
        if [[ -x $BIN_DIR/kubectl ]] && kctl get --raw /readyz >/dev/null 2>&1; then
            echo "apiserver $url /readyz: ok"
        else
            echo "apiserver $url /readyz: NOT READY"; ok=1
        fi
    else
        echo "env file missing (start did not finish)"; ok=1
    fi
    return "$ok"
}

# ---------------------------------------------------------------------------------------------
case ${1:-} in
    install-deps) cmd_install_deps ;;
    build) cmd_build ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    bin-dir) echo "$BIN_DIR" ;;
    stop-component) cmd_stop_component "${2:-}" "${3:-}" ;;
    start-component) cmd_start_component "${@:2}" ;;
    -h|--help|help) usage 0 ;;
    *) usage ;;
esac
