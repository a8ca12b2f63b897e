#!/bin/sh
# Unit tests: the greeting is right for no name, one name and two names.
set -eu
greet=${1:-dist/bin/greet}
check() {
    expected=$1; shift
    actual=$("$greet" "$@")
    if [ "$actual" != "$expected" ]; then
        echo "FAIL: greet $*: expected '$expected', got '$actual'" >&2
        exit 1
    fi
    echo "ok: greet $*"
}
check 'Hello, world!'
check 'Hello, Ada!' Ada
check "$(printf 'Hello, Ada!\nHello, Linus!')" Ada Linus
echo "3 passed, 0 failed"
