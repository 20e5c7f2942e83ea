#!/usr/bin/env bash
# `go test "$@"`, then — when it fails — a digest of what failed at the end of
# the output: CI keeps only the tail of a long log, and a timeout or a race
# report puts pages of stacks after the line that names the failing test.
set -uo pipefail
GO=${GO:-go}
log=$(mktemp "${TMPDIR:-/tmp}/gotest.XXXXXX")
trap 'rm -f "$log"' EXIT
"$GO" test "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
	echo
	echo "=== failure digest (go test exit $rc): failed tests and their messages, panics, timeouts, races, build errors"
	grep -E -e '^[[:space:]]*--- FAIL' -e '^(FAIL|panic:|fatal error:)' -e '^running tests:' \
		-e '^[[:space:]]+Test[^ ]* \([0-9]' -e '^[[:space:]]+[A-Za-z0-9_]+_test\.go:[0-9]+: ' \
		-e 'WARNING: DATA RACE' -e '^goleak' -e 'hangguard: .* hung' \
		-e '^# ' -e '\.go:[0-9]+:[0-9]+: ' -e 'no such file' "$log" |
		cut -c1-400 | awk '!seen[$0]++' | tail -n 60
fi
exit "$rc"
