#!/usr/bin/env bash
# Checks what a user's module graph gets from kavari: builds a one-file
# program that imports only github.com/kavari-go/kavari (through a replace to
# this checkout, outside the workspace), prints its `go list -m all`, and fails
# when that list holds a module that only the repository's own tooling needs:
# go.uber.org/dig (examples/di), or any module that the go.mod of examples/,
# bench/ or test/ brings and the library's go.mod does not.
#
# testify and gopkg.in/yaml.v3 are not on the deny list: segmentio/kafka-go's
# and leodido/go-urn's (validator's) go.mod files require them, so they stay in
# the list whatever kavari does. kfake, franz-go and kmsg stay too: the public
# package kavaritest imports kfake.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
deny='go.uber.org/dig'

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export GOWORK=off GOFLAGS=-mod=mod

cat >"$tmp/main.go" <<'EOF'
package main

import (
	"fmt"

	"github.com/kavari-go/kavari"
)

func main() { fmt.Println(kavari.DefaultRegistry != nil) }
EOF
cat >"$tmp/go.mod" <<EOF
module example.com/kavariuser

$(grep -m1 '^go ' "$root/go.mod")

require github.com/kavari-go/kavari v0.0.0

replace github.com/kavari-go/kavari => $root
EOF

(cd "$tmp" && go mod tidy && go build -o /dev/null . && go list -m all) >"$tmp/user.txt"
echo "modgraph: a program importing only kavari has $(($(wc -l <"$tmp/user.txt") - 1)) modules in go list -m all:" >&2
sed 's/^/  /' "$tmp/user.txt" >&2

# Module paths that examples/, bench/ or test/ require and the library does
# not (read from the go.mod files: since Go 1.17 they list every module that
# provides a package to the build).
paths() { awk '{print $1}' | sort -u; }
reqs() { go mod edit -json "$1" | awk '/^\t"Require"/ {r = 1; next} r && /^\t\]/ {r = 0} r && /"Path"/ {gsub(/[",]/, "", $2); print $2}'; }
reqs "$root/go.mod" | paths >"$tmp/lib.txt"
for m in examples bench test; do reqs "$root/$m/go.mod"; done | paths >"$tmp/tooling.txt"
{ comm -23 "$tmp/tooling.txt" "$tmp/lib.txt" | grep -v '^github.com/kavari-go/kavari' || true; echo "$deny" | tr ' ' '\n'; } | sort -u >"$tmp/deny.txt"

bad="$(paths <"$tmp/user.txt" | comm -12 - "$tmp/deny.txt")"
if [ -n "$bad" ]; then
  echo "modgraph: FAIL: the library's module graph pulls modules of its examples, bench or tests:" >&2
  echo "$bad" | sed 's/^/  /' >&2
  (cd "$tmp" && go mod graph | grep -F "$bad" | sed 's/^/  /') >&2 || true
  exit 1
fi
echo "modgraph: ok (none of: $(tr '\n' ' ' <"$tmp/deny.txt"))" >&2
