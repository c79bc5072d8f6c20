#!/usr/bin/env bash
# The key mutants (scripts/key-mutants.txt: write order, bitmap bit order,
# checksum, BAT mapping, parent ID, lock mode, each limit) must each be
# caught by their named test. On a copy of the tree (target/key-mutants/src,
# kept between runs so rebuilds are incremental), each mutant is applied in
# turn, its test built and run: the test must fail. First every named test
# must pass on the unmutated copy.
#
# Usage: scripts/key-mutants.sh [NAME...]   (default: every mutant)
# Exits 1 if a mutant survives, its text is not found, or a test fails
# unmutated.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TERM_COLOR=never
export CARGO_TARGET_DIR="$root/target"
copy="$root/target/key-mutants/src"
list="$root/scripts/key-mutants.txt"

# The copy: the tracked files (and new ones not ignored), fuzz/ aside.
rm -rf "$copy.new"
mkdir -p "$copy.new"
git ls-files -z --cached --others --exclude-standard -- . ':!fuzz' ':!corpora' |
  tar --null -T - -cf - | tar -xf - -C "$copy.new"
# corpora/ is only read: a link keeps the copy small.
ln -s "$root/corpora" "$copy.new/corpora"
# The copy builds in this repository's target directory (its dependencies
# are built once for both), but as a package of another name: cargo keys
# its artifacts and their freshness by package, and under the same name a
# build of the copy would pass for a build of the tree, so a later
# `cargo test` here could run binaries built from the copy's sources.
sed -i '0,/^name = "vhdref"$/s//name = "vhdref-key-mutants"/' "$copy.new/Cargo.toml"
grep -q '^name = "vhdref-key-mutants"$' "$copy.new/Cargo.toml" ||
  { echo "key-mutants: could not rename the package in the copy's Cargo.toml" >&2; exit 1; }
# Only files whose contents changed are copied (and so get a new time):
# cargo then rebuilds only what changed since the last run.
if [ -d "$copy" ]; then
  (cd "$copy.new" && find . -type f) | while IFS= read -r f; do
    cmp -s "$copy.new/$f" "$copy/$f" ||
      { mkdir -p "$(dirname "$copy/$f")" && cp "$copy.new/$f" "$copy/$f"; }
  done
  (cd "$copy" && find . -path ./corpora -prune -o -type f -print) | while IFS= read -r f; do
    [ -e "$copy.new/$f" ] || rm "$copy/$f"
  done
  rm -rf "$copy.new"
else
  mv "$copy.new" "$copy"
fi

# Parse the stanzas into parallel arrays.
names=() whats=() files=() finds=() replaces=() counts=() tests=()
while IFS= read -r line || [ -n "$line" ]; do
  case $line in
    '#'* | '') continue ;;
    '['*)
      names+=("$(sed 's/^\[\([^]]*\)\].*/\1/' <<<"$line")")
      whats+=("$(sed 's/^\[[^]]*\] *//' <<<"$line")")
      files+=("") finds+=("") replaces+=("") counts+=(1) tests+=("")
      ;;
    *)
      key=${line%% =*}
      value=${line#*= }
      [ "$value" = "$line" ] && value=""
      i=$((${#names[@]} - 1))
      case $key in
        file) files[i]=$value ;;
        find) finds[i]=$value ;;
        replace) replaces[i]=$value ;;
        count) counts[i]=$value ;;
        test) tests[i]=$value ;;
        *) echo "key-mutants: bad line: $line" >&2; exit 1 ;;
      esac
      ;;
  esac
done <"$list"

selected=()
for i in "${!names[@]}"; do
  if [ "$#" -eq 0 ] || [[ " $* " == *" ${names[i]} "* ]]; then selected+=("$i"); fi
done
[ "${#selected[@]}" -gt 0 ] || { echo "key-mutants: no mutant selected" >&2; exit 1; }

# build_test FILE: builds the test target of tests/FILE.rs (or, for the
# FILE "lib", the library's unit tests) in the copy and prints the path of
# its binary.
build_test() {
  local target select
  if [ "$1" = lib ]; then
    target=vhdref select=--lib
  else
    target=$(basename "$1" .rs) select="--test $target"
  fi
  # shellcheck disable=SC2086 # $select is two words or one on purpose
  (cd "$copy" && cargo test --quiet --no-run $select --message-format=json 2>/dev/null) |
    sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep "/deps/$target-" | tail -1
}
# run_test BINARY TEST: exit status of the one test.
run_test() {
  (cd "$copy" && timeout "${KEY_MUTANTS_TIMEOUT:-600}" "$1" --exact "$2" --test-threads 2 \
    >/dev/null 2>&1)
}

failures=0
echo "key-mutants: the named tests pass unmutated" >&2
declare -A checked
for i in "${selected[@]}"; do
  read -r tfile tname <<<"${tests[i]}"
  [ -n "${checked[$tfile $tname]:-}" ] && continue
  checked[$tfile $tname]=1
  bin=$(build_test "$tfile")
  if [ -z "$bin" ] || ! run_test "$bin" "$tname"; then
    echo "BROKEN  $tfile $tname fails (or does not build) unmutated"
    failures=$((failures + 1))
  fi
done
[ "$failures" -eq 0 ] || exit 1

caught=0 missed=0
for i in "${selected[@]}"; do
  name=${names[i]} file=${files[i]}
  read -r tfile tname <<<"${tests[i]}"
  cp "$copy/$file" "$copy/$file.orig"
  found=$(FIND=${finds[i]} REPLACE=${replaces[i]} perl -0777 -ne '
    (my $f = $ENV{FIND}) =~ s/\\n/\n/g;
    print scalar(() = /\Q$f\E/g);' "$copy/$file")
  if [ "$found" != "${counts[i]}" ]; then
    echo "STALE   $name: found ${found} times in $file, expected ${counts[i]}"
    missed=$((missed + 1))
    rm "$copy/$file.orig"
    continue
  fi
  FIND=${finds[i]} REPLACE=${replaces[i]} perl -0777 -pi -e '
    (my $f = $ENV{FIND}) =~ s/\\n/\n/g;
    (my $r = $ENV{REPLACE}) =~ s/\\n/\n/g;
    s/\Q$f\E/$r/g;' "$copy/$file"
  start=$(date +%s)
  bin=$(build_test "$tfile")
  if [ -z "$bin" ]; then
    echo "UNVIABLE $name: does not build: fix the mutant"
    missed=$((missed + 1))
  elif run_test "$bin" "$tname"; then
    echo "MISSED  $name: $tfile $tname passes ($(($(date +%s) - start)) s)"
    missed=$((missed + 1))
  else
    echo "caught  $name by $tfile $tname ($(($(date +%s) - start)) s)"
    caught=$((caught + 1))
  fi
  mv "$copy/$file.orig" "$copy/$file"
  # A new time, so the next build sees the file changed back.
  touch "$copy/$file"
done
echo "key-mutants: ${#selected[@]} mutants: $caught caught, $missed missed, stale or unviable"
[ "$missed" -eq 0 ]
