#!/usr/bin/env bash
# Shows that the tests spec/rules.md cites for each rule test that rule:
# with the rule's checks switched off, every one of them must fail.
#
# The library is built once with the cargo feature `rule-mutants`, under
# which `rules::disabled(Rule::X)` is true for the rule whose ID is in
# VHDREF_DISABLE_RULE (every place that enforces a rule asks it: an error
# rule that is off lets the image through, a warning rule that is off is
# not reported). Then, for each rule of spec/rules.md in turn, each test on
# its "Test:" line runs with VHDREF_DISABLE_RULE=ID and must FAIL ("caught").
# Before that, every cited test runs once with no rule off and must pass,
# so that a failure means the rule, not a broken test.
#
# Usage: scripts/rule-mutants.sh [RULE-ID...]   (default: every rule)
# Prints one line per (rule, test) and a summary; exits 1 if any cited
# test passes with its rule off, fails with every rule on, or a rule cites
# no test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# A test that needs a peer tool must not pass by skipping.
export VHDREF_REQUIRE_PEERS="${VHDREF_REQUIRE_PEERS:-1}"
# Per test run (a rule that is off may make a test loop or crawl).
limit="${RULE_MUTANTS_TIMEOUT:-300}"

# rule ID -> "file test" lines, from the "### ID" sections of spec/rules.md.
citations=$(awk '
  /^## / { id = "" }
  /^### / { id = ($2 ~ /^[A-Z0-9]+(-[A-Z0-9]+)+$/) ? $2 : "" }
  id != "" && /^- Test:/ {
    n = split($0, parts, "`"); file = ""
    for (i = 2; i <= n; i += 2) {
      span = parts[i]
      if (span ~ /^tests\//) file = span
      else if (file != "") { sub(/.*::/, "", span); print id, file, span }
    }
    cited[id] = 1
  }
  /^### / && id != "" { rules[++count] = id }
  END { for (i = 1; i <= count; i++) if (!(rules[i] in cited)) print rules[i], "-", "-" }
' spec/rules.md)

if [ "$#" -gt 0 ]; then
  wanted=" $* "
  citations=$(while read -r id file test; do
    case "$wanted" in *" $id "*) echo "$id $file $test" ;; esac
  done <<<"$citations")
fi
[ -n "$citations" ] || { echo "rule-mutants: no rule selected" >&2; exit 1; }

# Build the cited test binaries once, with the switch compiled in.
targets=$(awk '$2 != "-" { f = $2; sub(/^tests\//, "", f); sub(/\.rs$/, "", f); print f }' \
  <<<"$citations" | sort -u)
args=()
for t in $targets; do args+=(--test "$t"); done
echo "rule-mutants: building $(wc -w <<<"$targets") test binaries with --features rule-mutants" >&2
build_log=$(mktemp)
trap 'rm -f "$build_log"' EXIT
cargo test --features rule-mutants --no-run "${args[@]}" 2>"$build_log" || {
  cat "$build_log" >&2
  exit 1
}
declare -A bin
while read -r src path; do
  bin[$src]=$path
done < <(sed -n 's/^ *Executable \(tests\/[^ ]*\.rs\) (\(.*\))$/\1 \2/p' "$build_log")

# run FILE TEST [RULE]: exit status of the one test (0 passed).
run() {
  local file=$1 test=$2 rule=${3:-}
  VHDREF_DISABLE_RULE=$rule timeout "$limit" "${bin[$file]}" --exact "$test" \
    --test-threads 1 >/dev/null 2>&1
}
# With an empty VHDREF_DISABLE_RULE nothing is off.
export VHDREF_DISABLE_RULE=

failures=0
echo "rule-mutants: every cited test passes with every rule on" >&2
while read -r id file test; do
  [ "$file" = "-" ] && continue
  if [ -z "${bin[$file]:-}" ]; then
    echo "BROKEN  $id  $file $test: no test binary for $file"
    failures=$((failures + 1))
  elif ! VHDREF_DISABLE_RULE='' run "$file" "$test"; then
    echo "BROKEN  $id  $file $test: fails with every rule on"
    failures=$((failures + 1))
  fi
done < <(sort -u -k2,3 <<<"$citations")
[ "$failures" -eq 0 ] || { echo "rule-mutants: $failures cited test(s) broken before any rule is off"; exit 1; }

rules=0 tests=0 caught=0 missed=0
last=""
while read -r id file test; do
  [ "$id" != "$last" ] && rules=$((rules + 1)) && last=$id
  if [ "$file" = "-" ]; then
    echo "MISSED  $id  (no test cited)"
    missed=$((missed + 1))
    continue
  fi
  tests=$((tests + 1))
  status=0
  run "$file" "$test" "$id" || status=$?
  if [ "$status" -eq 0 ]; then
    echo "MISSED  $id  $file $test passes with $id off"
    missed=$((missed + 1))
  elif [ "$status" -eq 124 ]; then
    echo "caught  $id  $file $test (timed out after ${limit}s)"
    caught=$((caught + 1))
  else
    echo "caught  $id  $file $test"
    caught=$((caught + 1))
  fi
done <<<"$citations"

echo "rule-mutants: $rules rules, $tests cited tests: $caught caught, $missed missed"
[ "$missed" -eq 0 ]
