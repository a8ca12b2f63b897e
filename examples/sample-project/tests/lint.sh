#!/bin/sh
# Lint: every shell script parses, and none has trailing whitespace.
set -eu
status=0
for f in dist/bin/*; do
    sh -n "$f" || status=1
    if grep -n '[[:space:]]$' "$f"; then
        echo "trailing whitespace in $f" >&2
        status=1
    fi
    echo "checked $f"
done
exit $status
