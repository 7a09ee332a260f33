#!/usr/bin/env bash
# Smoke test of the test control plane started by `scripts/test-cluster.sh start DIR`:
# namespace + ConfigMap + Deployment -> a ReplicaSet appears; changing the pod template's
# annotation -> a second ReplicaSet appears (the observable start of a rollout).
#
#   tests/cluster-smoke.sh DIR        # exit 0 on success, non-zero (with a reason) on failure
set -euo pipefail

PROG=cluster-smoke.sh
die() { echo "$PROG: FAIL: $*" >&2; exit 1; }
step() { echo "$PROG: $*"; }

DIR=${1:-}
[[ -n $DIR ]] || die "usage: $PROG CLUSTER_DIR (the DIR given to scripts/test-cluster.sh start)"
[[ -f $DIR/env ]] || die "$DIR/env not found: is a cluster started in $DIR?"
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
KUBECTL=$NUDGE_K8S_BIN/kubectl
[[ -x $KUBECTL ]] || die "kubectl not found at $KUBECTL"
k() { "$KUBECTL" --kubeconfig "$KUBECONFIG" --request-timeout=10s "$@"; }

NS=nudge-smoke-$(date +%s)-$$
TIMEOUT=${NUDGE_SMOKE_TIMEOUT:-60}

cleanup() { k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true; }
trap cleanup EXIT

# wait_for DESCRIPTION COMMAND...: poll until COMMAND succeeds or TIMEOUT seconds pass.
wait_for() {
    local what=$1; shift
    local end=$(( SECONDS + TIMEOUT ))
    until "$@" >/dev/null 2>&1; do
        (( SECONDS < end )) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.5
    done
}

rs_hashes() { # pod-template-hash labels of the Deployment's ReplicaSets, sorted
    k -n "$NS" get replicasets -l app=smoke \
        -o jsonpath='{range .items[*]}{.metadata.labels.pod-template-hash}{"\n"}{end}' | sort -u
}
rs_count_is() { [[ $(rs_hashes | grep -c .) -eq $1 ]]; }

step "server $NUDGE_TEST_APISERVER, version $(k version -o json | jq -r .serverVersion.gitVersion)"

step "create namespace $NS"
k create namespace "$NS" >/dev/null
wait_for "ServiceAccount $NS/default" k -n "$NS" get serviceaccount default -o name

step "create ConfigMap and Deployment"
k -n "$NS" create configmap smoke-config --from-literal=app.conf='greeting=hello' >/dev/null
k -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
spec:
  replicas: 1
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
      annotations: {nudge.test/config-hash: "v1"}
    spec:
      containers:
      - name: app
        image: registry.invalid/smoke:1
        volumeMounts: [{name: config, mountPath: /etc/smoke}]
      volumes:
      - name: config
        configMap: {name: smoke-config}
EOF
[[ $(k -n "$NS" get configmap smoke-config -o jsonpath='{.data.app\.conf}') == greeting=hello ]] \
    || die "ConfigMap content not read back"

wait_for "the first ReplicaSet" rs_count_is 1
first=$(rs_hashes)
step "ReplicaSet 1 appeared: smoke-$first"
has_pods() { [[ -n $(k -n "$NS" get pods -l app=smoke -o name) ]]; }
wait_for "the ReplicaSet to create its Pod" has_pods

step "patch the pod template annotation"
k -n "$NS" patch deployment smoke --type merge \
    -p '{"spec":{"template":{"metadata":{"annotations":{"nudge.test/config-hash":"v2"}}}}}' >/dev/null

wait_for "the second ReplicaSet" rs_count_is 2
second=$(rs_hashes | grep -vx "$first") || die "no new pod-template-hash after the patch"
step "ReplicaSet 2 appeared: smoke-$second"
newest=$(k -n "$NS" get replicaset "smoke-$second" \
    -o jsonpath='{.spec.template.metadata.annotations.nudge\.test/config-hash}')
[[ $newest == v2 ]] || die "new ReplicaSet carries annotation '$newest', expected v2"

k -n "$NS" get replicasets -l app=smoke \
    -o custom-columns=NAME:.metadata.name,DESIRED:.spec.replicas,ANNOTATION:'.spec.template.metadata.annotations.nudge\.test/config-hash'
step "PASS"
