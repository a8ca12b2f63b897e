#!/bin/sh
# Assembles the release tree in dist/.
set -eu
rm -rf dist
mkdir -p dist/bin
cp src/greet.sh dist/bin/greet
chmod 755 dist/bin/greet
printf '%s\n' "${SLUICE_EXECUTION_ID:-local}" > dist/BUILD_ID
echo "built dist/ with $(ls dist/bin | wc -l) program(s)"
