#!/usr/bin/env bash
# Install @tensorflow/tfjs 3.18.0 (the version the lstm-text-generation example pins; pure JavaScript,
# no native binary) into tests/tfjs/node_modules with npm, installing Debian's nodejs and npm with apt
# first when node or npm is missing. tests/tfjs/original.js runs the original example with it.
# Safe to run from any directory, and from several pytest workers at once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR="$ROOT/tests/tfjs"
WANT=3.18.0
PKG="$DIR/node_modules/@tensorflow/tfjs/package.json"

node_ok() {
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 &&
        node -e 'process.exit(parseInt(process.versions.node, 10) >= 14 ? 0 : 1)' 2>/dev/null
}

# The installed tfjs version, or nothing when it is not installed.
installed_version() {
    [[ -f "$PKG" ]] && node -e 'process.stdout.write(String(require(process.argv[1]).version))' "$PKG" 2>/dev/null || true
}

if ! node_ok; then
    . "$ROOT/deploy/local/apt.sh"
    apt_ready install-tfjs "Install Node.js 14 or later with npm, then run this again." nodejs npm
    apt_install nodejs npm
    hash -r
    if ! node_ok; then
        echo "install-tfjs: apt-get installed node $(node --version 2>/dev/null || echo '(none)'), but this needs node >= 14 with npm." >&2
        exit 1
    fi
fi

if [[ $(installed_version) == "$WANT" ]]; then
    echo "@tensorflow/tfjs $WANT is already installed in tests/tfjs/node_modules (node $(node --version))"
    exit 0
fi

# One npm install at a time per checkout: the others wait, then find it installed.
LOCK="${TMPDIR:-/tmp}/textgen-tfjs-$(printf %s "$ROOT" | cksum | cut -d' ' -f1).lock"
exec 9>"$LOCK"
flock 9
if [[ $(installed_version) != "$WANT" ]]; then
    echo "install-tfjs: installing @tensorflow/tfjs $WANT in tests/tfjs with npm..."
    (cd "$DIR" && npm install --no-audit --no-fund --no-package-lock --loglevel=error >/dev/null)
fi
flock -u 9

GOT=$(installed_version)
if [[ $GOT != "$WANT" ]]; then
    echo "install-tfjs: npm install finished but tests/tfjs/node_modules has @tensorflow/tfjs '${GOT:-none}', not $WANT." >&2
    exit 1
fi
echo "install-tfjs: @tensorflow/tfjs $GOT (node $(node --version))"
