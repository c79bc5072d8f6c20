#!/usr/bin/env bash
# Builds the seed corpus of the raw-byte targets (open_read, open_write,
# check) in fuzz/seeds/raw/: the images of corpora/ (gunzipped) of at
# most SEED_MAX_BYTES (64 KiB) and a few made by examples/seeds.rs, each
# behind the control byte that leaves it as it is. With nightly and
# cargo-fuzz, libFuzzer's merge then keeps, per target, only the seeds
# that add coverage, and seeds/raw holds the union; without them every
# seed is kept.
#
# Run it after corpora/ changes, and commit fuzz/seeds/.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
corpora="$fuzz/../corpora"
max=${SEED_MAX_BYTES:-65536}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vhdseeds.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/images"
(cd "$corpora" && find . -type f \( -name '*.vhd' -o -name '*.vhd.gz' \) | sort) |
  while read -r f; do
    dest="$tmp/images/${f#./}"
    dest=${dest%.gz}
    mkdir -p "$(dirname "$dest")"
    if [[ $f == *.gz ]]; then
      gzip -dc "$corpora/$f" >"$dest"
    else
      cp "$corpora/$f" "$dest"
    fi
    [ "$(stat -c %s "$dest")" -le "$max" ] || rm "$dest"
  done
(
  cd "$tmp/images"
  find . -type f | sort >"$tmp/list"
  xargs cargo run --manifest-path "$fuzz/Cargo.toml" --release --quiet --example seeds -- \
    "$tmp/all" <"$tmp/list"
)

# Every seed under its own name, found by content (merge names files by
# their SHA-1).
declare -A name_of
while read -r sum file; do
  name_of[$sum]=$(basename "$file")
done < <(sha1sum "$tmp/all"/*)

rm -rf "${fuzz:?}/seeds/raw"
mkdir -p "$fuzz/seeds/raw"
for target in open_read open_write check; do
  mkdir -p "$tmp/merged-$target"
  if cargo +nightly fuzz --version >/dev/null 2>&1; then
    (cd "$fuzz" && cargo +nightly fuzz run -s none "$target" "$tmp/merged-$target" "$tmp/all" \
      -- -merge=1 -rss_limit_mb=2048 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true)
  else
    echo "make-seeds: no nightly cargo-fuzz: keeping every seed for $target" >&2
    cp "$tmp/all"/* "$tmp/merged-$target/"
  fi
  while read -r sum file; do
    cp "$file" "$fuzz/seeds/raw/${name_of[$sum]}"
  done < <(sha1sum "$tmp/merged-$target"/*)
  echo "make-seeds: $target keeps $(find "$tmp/merged-$target" -type f | wc -l) seeds"
done
echo "make-seeds: fuzz/seeds/raw: $(find "$fuzz/seeds/raw" -type f | wc -l) seeds," \
  "$(du -sh "$fuzz/seeds/raw" | cut -f1)"
