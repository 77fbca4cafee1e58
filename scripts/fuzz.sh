#!/usr/bin/env bash
# Runs every fuzz target of the module, one at a time, for FUZZTIME each
# (a duration like 30s, or an exec count like 50000x). Go 1.26's fuzz
# coordinator sometimes ends a duration-bounded run with a spurious
# "context deadline exceeded" (golang/go#75804), so counts are the default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime="${1:-50000x}"
status=0
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 2; then
      status=1
    fi
  done
done
exit $status
