#!/bin/sh
# The browser client package, as `make test` checks it (part of `make test-client`):
#
#   gateway/client/check.sh
#
# 1. installs Node.js and npm from Debian when missing (as root);
# 2. `npm ci` here, from the committed package-lock.json (into ./node_modules);
# 3. builds the package (tsc type-checks and writes the declarations; esbuild bundles) and
#    fails unless gateway/assets/sse-client.js, the bundle the gateway embeds, is byte for
#    byte what the sources build;
# 4. runs the unit tests with Node's test runner.
set -eu
cd "$(dirname "$0")"

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 18 ] || ! command -v npm >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "check.sh: needs Node.js >= 18 and npm (install them, or run as root)" >&2
        exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm
fi

npm ci --no-audit --no-fund --loglevel=error
node scripts/build.mjs --check
exec node --test --test-timeout=20000 test/
