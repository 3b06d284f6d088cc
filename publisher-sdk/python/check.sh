#!/bin/sh
# The Python publisher SDK (sse_publisher), as `make test` and `make lint` check it:
#
#   publisher-sdk/python/check.sh        # everything: lint, then the tests
#   publisher-sdk/python/check.sh lint   # the type check and the linters only
#   publisher-sdk/python/check.sh setup  # steps 1-2 only: .venv with the package installed
#                                        # (for other suites that run Python workers)
#
# 1. installs what is missing from Debian (as root): python3 with venv, redis-server and
#    redis-cli (the tests start their own servers and a 3-master cluster), openssl (test
#    certificates);
# 2. makes .venv here (git-ignored) and installs requirements-dev.txt into it from PyPI,
#    again only when that file changes; installs the package itself (pip install .) on
#    every run, so the tests import what a user's pip would install;
# 3. lint: the shipped Lua copies must equal publisher-sdk/wire/lua/ byte for byte
#    (scripts/copy_lua.py --check), mypy --strict, ruff check, ruff format --check;
# 4. builds the gateway (cargo build -p sse-gateway: the HTTP transport and the Celery
#    example are tested against the real binary) and runs pytest.
set -eu
cd "$(dirname "$0")"
mode=${1:-all}
case $mode in
all | lint | setup) ;;
*)
    echo "usage: check.sh [lint|setup]" >&2
    exit 2
    ;;
esac

need_debian() {
    missing=""
    for pair in "$@"; do
        command=${pair%%=*}
        package=${pair#*=}
        if [ "$command" = venv ]; then
            python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$missing $package"
        elif ! command -v "$command" >/dev/null 2>&1; then
            missing="$missing $package"
        fi
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "check.sh: needs$missing (install them, or run as root)" >&2
        exit 1
    fi
    echo "check.sh: installing$missing"
    apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

need_debian python3=python3 venv=python3-venv
if [ "$mode" = all ]; then
    need_debian redis-server=redis-server redis-cli=redis-tools openssl=openssl
fi
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
    echo "check.sh: needs Python 3.10 or newer, found $(python3 --version 2>&1)" >&2
    exit 1
fi

venv=.venv
stamp=$venv/.requirements.sha256
want=$(sha256sum requirements-dev.txt | cut -d' ' -f1)
if [ ! -x $venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
    rm -rf $venv
    python3 -m venv $venv
    $venv/bin/pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" >$stamp
fi
$venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation .
rm -rf build src/*.egg-info
[ "$mode" = setup ] && exit 0

python3 scripts/copy_lua.py --check
$venv/bin/mypy
$venv/bin/ruff check --quiet .
$venv/bin/ruff format --check --quiet .
echo "check.sh: lint passed (mypy --strict, ruff, Lua copies)"
[ "$mode" = lint ] && exit 0

(cd ../.. && cargo build -q --locked -p sse-gateway)
exec $venv/bin/pytest -q
