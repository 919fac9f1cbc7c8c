#!/bin/sh
# devcc.sh OUT SRC... — compiles and links a few sources with the project's warning and
# sanitizer flags and every library, for working on one module before the whole tree builds.
# Run from the top of the checkout: tools/devcc.sh /tmp/t tests/unit/test_x.c mta/x.c base/util.c
set -e
out=$1; shift
exec gcc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -g -O1 \
  -fsanitize=address,undefined -fno-omit-frame-pointer \
  -I. -DKILN_SRCDIR="\"$(pwd)\"" "$@" -o "$out" \
  $(pkg-config --cflags --libs check openssl libcares sqlite3 yaml-0.1 jansson libcrypt) -lev -lm
