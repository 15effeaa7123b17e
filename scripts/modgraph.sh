#!/usr/bin/env bash
# Checks what a user's module graph gets from kavari: builds a one-file
# program that imports only github.com/kavari-go/kavari (through a replace to
# this checkout, outside the workspace), prints its `go list -m all`, and fails
# when that list holds
#   - go.uber.org/dig (examples/di), kavaritest, or any module that the go.mod of another
#     module of the workspace (go.work: examples/, bench/, test/...) requires
#     and the library's go.mod does not;
#   - a module that only kavari's go.mod brings (no other module of the graph
#     requires it, and the program does not build with it): what the library's
#     own tests need must already come with its dependencies. There is no
#     exception: kavaritest, whose embedded broker is franz-go's kfake, is a
#     module of its own, and the library's tests run that broker in a child
#     process (internal/testenv) rather than import it.
# Before that, it fails when the go.mod of a module of the workspace (the
# library, kavaritest, otel, contract, cmd/kavari, ...) has a replace line:
# the go command refuses to install or build from a published module whose
# go.mod has one (`go install github.com/kavari-go/kavari/cmd/kavari@latest`),
# and the modules are tied together by go.work instead.
#
# Then the same for a program that imports github.com/kavari-go/kavari/outbox:
# it fails when that program's list holds any module beyond the first
# program's (the outbox module's go.mod must require only the library: its
# drivers live in the modules of its tests, outbox/test, and of its example,
# outbox/example).
#
# testify and gopkg.in/yaml.v3 stay in the list whatever kavari does:
# segmentio/kafka-go's and leodido/go-urn's (validator's) go.mod files require
# them. kavari's go.mod requires no newer testify than those do, so the
# library's tests add no module of their own.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
lib=github.com/kavari-go/kavari
deny='go.uber.org/dig github.com/kavari-go/kavari/kavaritest'

# No module of the workspace may have a replace line in its go.mod.
replaced=0
for m in $(cd "$root" && GOWORK="$root/go.work" go work edit -json | sed -n 's/^\t*"DiskPath": "\(.*\)"$/\1/p'); do
  # (grep -c reads all its input: no early exit to break the pipe under pipefail)
  if [ "$(go mod edit -json "$root/$m/go.mod" | grep -c '^[[:space:]]"Replace": \[' || true)" != 0 ]; then
    echo "modgraph: FAIL: $m/go.mod has a replace line (the go command refuses to install from such a module; go.work ties the modules together):" >&2
    grep -n '^replace\|=>' "$root/$m/go.mod" | sed 's/^/  /' >&2
    replaced=1
  fi
done
[ "$replaced" = 0 ] || exit 1

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

require $lib v0.0.0

replace $lib => $root
EOF

(cd "$tmp" && go mod tidy && go build -o /dev/null . && go list -m all) >"$tmp/user.txt"
(cd "$tmp" && go mod graph) >"$tmp/graph.txt"
echo "modgraph: a program importing only kavari has $(($(wc -l <"$tmp/user.txt") - 1)) modules in go list -m all:" >&2
sed 's/^/  /' "$tmp/user.txt" >&2

paths() { awk '{print $1}' | sort -u; }
words() { tr ' ' '\n' | grep . | sort -u; }
paths <"$tmp/user.txt" >"$tmp/userpaths.txt"

# Module paths that the other modules of go.work require and the library does
# not (read from the go.mod files: since Go 1.17 they list every module that
# provides a package to the build).
reqs() { go mod edit -json "$1" | awk '/^\t"Require"/ {r = 1; next} r && /^\t\]/ {r = 0} r && /"Path"/ {gsub(/[",]/, "", $2); print $2}'; }
reqs "$root/go.mod" | sort -u >"$tmp/lib.txt"
others="$(cd "$root" && GOWORK="$root/go.work" go work edit -json | sed -n 's/^\t*"DiskPath": "\(.*\)"$/\1/p' | grep -vx '\.')"
for m in $others; do reqs "$root/$m/go.mod"; done | sort -u >"$tmp/tooling.txt"
{ comm -23 "$tmp/tooling.txt" "$tmp/lib.txt" | grep -v "^$lib" || true; echo "$deny" | words; } | sort -u >"$tmp/deny.txt"

# Modules that only kavari's go.mod brings: those the program no longer reaches
# once kavari's own requirements are cut from the graph. The others (reached
# through the requirements of kavari's dependencies, such as golang.org/x/net
# through kafka-go's) are not kavari's go.mod's doing, even when another module
# of go.work requires them too; they are kept in reached.txt.
awk -v lib="$lib" -v reached="$tmp/reached.txt" '
  { split($1, a, "@"); split($2, b, "@") }
  index($1, "@") == 0 { main = $1 }
  b[1] == "go" || b[1] == "toolchain" { next }
  { all[b[1]] = 1 }
  a[1] == lib { next }
  { adj[a[1]] = adj[a[1]] " " b[1] }
  END {
    seen[main] = 1; seen[lib] = 1; queue[1] = main; n = 1
    for (i = 1; i <= n; i++) {
      k = split(adj[queue[i]], to, " ")
      for (j = 1; j <= k; j++) if (!(to[j] in seen)) { seen[to[j]] = 1; queue[++n] = to[j] }
    }
    for (m in all) if (!(m in seen)) print m
    for (m in seen) print m > reached
  }' "$tmp/graph.txt" | sort -u >"$tmp/onlylib.txt"
sort -u -o "$tmp/reached.txt" "$tmp/reached.txt"
{ comm -12 "$tmp/userpaths.txt" "$tmp/deny.txt" | comm -23 - "$tmp/reached.txt"; echo "$deny" | words | comm -12 - "$tmp/userpaths.txt"; } | sort -u >"$tmp/bad.txt"
cat "$tmp/onlylib.txt" >>"$tmp/bad.txt"

if [ -s "$tmp/bad.txt" ]; then
  echo "modgraph: FAIL: the library's go.mod brings modules that its users should not get" >&2
  echo "(required by other modules of go.work, or only by the library's own tests):" >&2
  sort -u "$tmp/bad.txt" | while read -r m; do grep -F " $m@" "$tmp/graph.txt" | sed 's/^/  /' >&2; done
  exit 1
fi
echo "modgraph: ok: no replace line in the workspace's go.mod files; none of $(tr '\n' ' ' <"$tmp/deny.txt")and no module that only kavari's go.mod brings" >&2

# A program importing the outbox module gets nothing beyond the library's
# graph (its database drivers are the user's choice).
ob="$lib/outbox"
mkdir "$tmp/ob"
cat >"$tmp/ob/main.go" <<'EOF'
package main

import (
	"fmt"

	"github.com/kavari-go/kavari/outbox"
)

func main() { fmt.Println(outbox.Shards) }
EOF
cat >"$tmp/ob/go.mod" <<EOF
module example.com/outboxuser

$(grep -m1 '^go ' "$root/go.mod")

require $ob v0.0.0

replace $lib => $root

replace $ob => $root/outbox
EOF
(cd "$tmp/ob" && go mod tidy && go build -o /dev/null . && go list -m all) >"$tmp/obuser.txt"
paths <"$tmp/obuser.txt" | grep -vx "example.com/outboxuser\|$ob\|$lib" | comm -23 - "$tmp/userpaths.txt" >"$tmp/obextra.txt" || true
if [ -s "$tmp/obextra.txt" ]; then
  echo "modgraph: FAIL: a program importing the outbox module gets modules a program importing only kavari does not (the outbox's go.mod must require only the library):" >&2
  (cd "$tmp/ob" && go mod graph) >"$tmp/obgraph.txt"
  while read -r m; do grep -F " $m@" "$tmp/obgraph.txt" | sed 's/^/  /' >&2; done <"$tmp/obextra.txt"
  exit 1
fi
echo "modgraph: ok: a program importing the outbox module has $(($(wc -l <"$tmp/obuser.txt") - 1)) modules, none beyond the library's graph" >&2
