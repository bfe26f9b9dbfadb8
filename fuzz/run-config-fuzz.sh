#!/bin/sh
# The config.pbtxt fuzzer (make fuzz): fuzz/run-fuzz.sh config [seconds] [build-dir] [corpus-dir].
exec "$(dirname "$0")/run-fuzz.sh" config "$@"
