#!/usr/bin/env bash
# Mutation testing of one module with cargo-mutants, on a copy of the tree
# (the working tree is never touched): each mutant of the module's code is
# built and the module's tests run against it; a mutant no test catches is
# "missed". The results (caught.txt, missed.txt, timeout.txt,
# unviable.txt, outcomes.json) go to mutants/MODULE/mutants.out/ (or
# $MUTANTS_OUT). spec/mutants.md records the counts and, for each survivor,
# the test that now kills it or why it is equivalent.
#
# Usage: scripts/mutants-run.sh MODULE [SHARD] [-- EXTRA-TEST-BINARY-ARGS]
#   MODULE  format | model | image | check
#   SHARD   k/n (0 <= k < n): only every n-th mutant, starting at the k-th
#           (cargo mutants --shard k/n --sharding round-robin: a sample
#           spread over the whole module)
# Needs cargo-mutants (`cargo install cargo-mutants --locked`). Slow: on two
# cores a mutant takes about a minute; it runs at nice 19, one mutant and
# one compiler job at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
module=${1:?usage: scripts/mutants-run.sh format|model|image|check [k/n] [-- args]}
shift
shard=""
if [ "$#" -gt 0 ] && [ "$1" != "--" ]; then
  shard=$1
  shift
fi
[ "${1:-}" = "--" ] && shift
extra=("$@")

# The tests that can catch a mutant of each module (the fast ones: the
# peer, CLI, NBD, FUSE, kill and I/O-fault suites run minutes each).
fast=(--test bad_chains --test bad_input --test bitmap_cache --test broken_parents
  --test checker --test checker_laws --test commit --test corpora --test crash
  --test foreign_children --test fuzz_regressions --test laws --test locking
  --test model_vs_driver --test open_rules --test snapshots)
case $module in
  format) files=(-f 'src/format/*.rs')
    tests=(--lib --test laws --test bad_input --test checker --test checker_laws
      --test snapshots --test corpora --test fuzz_regressions --test bad_chains
      --test foreign_children --test open_rules) ;;
  model) files=(-f src/model.rs)
    tests=(--lib --test laws --test model_vs_driver --test checker_laws --test crash
      --test bitmap_cache) ;;
  # maintenance.rs is the ground of the operations: their suites too.
  image) files=(-f 'src/image/*.rs')
    tests=(--lib "${fast[@]}" --test ops_compact --test ops_resize --test ops_rebase
      --test ops_repair) ;;
  check) files=(-f 'src/check/*.rs')
    tests=(--lib --test checker --test checker_laws --test corpora --test open_rules
      --test broken_parents --test bad_chains --test cli_safety --test key_mutants) ;;
  *) echo "mutants-run: unknown module $module" >&2; exit 2 ;;
esac
# Test files added since this list was written are included when present.
present=()
for ((i = 0; i < ${#tests[@]}; i++)); do
  if [ "${tests[$i]}" = "--test" ]; then
    i=$((i + 1))
    [ -f "tests/${tests[$i]}.rs" ] && present+=(--test "${tests[$i]}")
  else
    present+=("${tests[$i]}")
  fi
done
for extra_test in mutant_killers; do
  [ -f "tests/$extra_test.rs" ] && present+=(--test "$extra_test")
done

copy=${MUTANTS_COPY:-${TMPDIR:-/tmp}/vhdref-mutants}
out=${MUTANTS_OUT:-$PWD/mutants/$module}
# A fresh copy of the sources; its target/ is kept, so the dependencies
# are built once for every module. The copies get the current time (tar
# -m), so cargo rebuilds vhdref even when a run that was stopped left a
# build of a mutant newer than the sources.
mkdir -p "$copy" "$out"
find "$copy" -mindepth 1 -maxdepth 1 ! -name target -exec rm -rf {} +
git ls-files -z --cached --others --exclude-standard -- . ':!fuzz' |
  tar --null -T - -cf - | tar -xmf - -C "$copy"
echo "mutants-run: $module ${shard:+shard $shard }in $copy, results in $out" >&2
status=0
# No debug info: each mutant links a dozen test binaries, and linking is
# most of a mutant's build time.
export CARGO_PROFILE_DEV_DEBUG=${CARGO_PROFILE_DEV_DEBUG:-0}
nice -n 19 cargo mutants --in-place -d "$copy" "${files[@]}" \
  --jobserver-tasks 1 --timeout 240 --build-timeout 1200 \
  --output "$out" ${shard:+--shard "$shard" --sharding round-robin} \
  -- "${present[@]}" -- "${extra[@]}" || status=$?
for kind in caught missed timeout unviable; do
  printf "%s %s\n" "$kind" "$(cat "$out/mutants.out/$kind.txt" 2>/dev/null | wc -l)"
done
# cargo mutants exits 2 when mutants were missed, 3 on timeouts.
exit "$status"
