#!/bin/sh
# vhdref in another project's CI: copy this file into your repository.
#
#   ci-recipe.sh IMAGE_DIR [READER_COMMAND]
#
# 1. Every *.vhd under IMAGE_DIR (the images your project produces) is
#    judged by `vhd check`, which writes a JUnit file per image. An image
#    with an error fails the job; warnings do not, unless STRICT=1.
# 2. With READER_COMMAND, your VHD reader is run over the vhdref corpus by
#    `vhd conform --reader READER_COMMAND`, which writes one JUnit file.
#    READER_COMMAND is a shell command with {image} (the VHD to read) and
#    {raw} (where your reader must write the guest contents), for example
#    'mytool export {image} --out {raw}'. Any case your reader gets wrong
#    fails the job.
#
# Environment:
#   VHD           the vhd binary (default: vhd on the PATH)
#   REPORT_DIR    where the JUnit files go (default: vhd-reports)
#   STRICT=1      an image with warnings fails too
#   CORPUS        the corpus directory, e.g. a checkout's corpora/ (default:
#                 the one of the source tree vhd was built from)
#   CONFORM_OPTS  more `vhd conform` options, split on spaces, e.g.
#                 '--skip-differencing --allow-unsupported' for a reader
#                 without differencing support, or '--timeout 120'
#
# Exit status: 0 every image passed and every conform case passed; 1 some
# did not (each is listed on stderr and in the JUnit files); 2 usage.
set -u

usage() {
    echo "usage: $0 IMAGE_DIR [READER_COMMAND]" >&2
    exit 2
}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
images=$1
reader=${2:-}
[ -d "$images" ] || { echo "$0: $images is not a directory" >&2; exit 2; }
vhd=${VHD:-vhd}
reports=${REPORT_DIR:-vhd-reports}
mkdir -p "$reports" || exit 2
strict=
[ "${STRICT:-0}" = 1 ] && strict=--strict

failed=0
checked=0
# One JUnit file per image, named after its path under IMAGE_DIR.
list=$(mktemp) || exit 2
trap 'rm -f "$list"' EXIT
find "$images" -type f -name '*.vhd' | LC_ALL=C sort > "$list"
while IFS= read -r image; do
    checked=$((checked + 1))
    name=$(printf '%s' "${image#"$images"/}" | tr '/ ' '__')
    "$vhd" check $strict --output junit "$image" > "$reports/check-$name.xml"
    status=$?
    case $status in
    0) echo "ok       $image" >&2 ;;
    3) echo "warnings $image" >&2 ;;
    2) echo "ERRORS   $image" >&2; failed=1 ;;
    *) echo "UNREADABLE $image (vhd check exit $status)" >&2; failed=1 ;;
    esac
done < "$list"
if [ "$checked" -eq 0 ]; then
    echo "$0: no *.vhd under $images" >&2
    failed=1
fi

if [ -n "$reader" ]; then
    set -- --reader "$reader" --output junit
    [ -n "${CORPUS:-}" ] && set -- "$@" --corpus "$CORPUS"
    # shellcheck disable=SC2086 # CONFORM_OPTS is a list of options
    "$vhd" conform "$@" ${CONFORM_OPTS:-} > "$reports/conform.xml"
    status=$?
    counts=$(grep -o -m1 'tests="[0-9]*" failures="[0-9]*" skipped="[0-9]*"' "$reports/conform.xml")
    if [ "$status" -eq 0 ]; then
        echo "ok       vhd conform: $counts" >&2
    else
        echo "FAILED   vhd conform (exit $status): ${counts:-no report}; see $reports/conform.xml" >&2
        failed=1
    fi
fi
exit "$failed"
