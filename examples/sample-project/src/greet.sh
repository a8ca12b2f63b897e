#!/bin/sh
# Prints a greeting for each name given, or for the world.
set -eu
if [ "$#" -eq 0 ]; then
    set -- world
fi
for name in "$@"; do
    printf 'Hello, %s!\n' "$name"
done
