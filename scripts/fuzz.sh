#!/usr/bin/env bash
# Runs every fuzz target of the module, one at a time, for FUZZTIME each
# (a duration like 30s, or an exec count like 50000x), then keeps what the
# fuzzer found: new interesting inputs go from Go's fuzz cache into the
# package's testdata/fuzz/<target>/, so they become seed corpus that every
# `go test` run replays (commit them). Prints execs and corpus size per
# target. Go 1.26's fuzz coordinator sometimes ends a duration-bounded run
# with a spurious "context deadline exceeded" (golang/go#75804), so counts
# are the default.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
fuzztime="${1:-50000x}"
cache="$(go env GOCACHE)/fuzz"
status=0
summary=()
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    log=$(mktemp)
    if ! go test "$pkg" -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel 2 2>&1 | tee "$log"; then
      status=1
    fi
    execs=$(grep -o 'execs: [0-9]*' "$log" | tail -n1 | awk '{print $2}')
    found="$cache/$pkg/$target"
    kept=0
    if [[ -d "$found" ]]; then
      mkdir -p "$dir/testdata/fuzz/$target"
      for f in "$found"/*; do
        [[ -e "$f" ]] || continue
        if [[ ! -e "$dir/testdata/fuzz/$target/$(basename "$f")" ]]; then
          cp "$f" "$dir/testdata/fuzz/$target/"
          kept=$((kept + 1))
        fi
      done
    fi
    corpus=$(find "$dir/testdata/fuzz/$target" -type f 2>/dev/null | wc -l)
    summary+=("$(printf '%-48s %-28s execs %-9s kept %-4s corpus %s' "${pkg#github.com/strait-proxy/strait/}" "$target" "${execs:-?}" "$kept" "$corpus")")
    rm -f "$log"
  done
done
echo "== fuzz summary ($fuzztime per target)"
printf '%s\n' "${summary[@]}"
exit $status
