#!/usr/bin/env bash
# Opens a benchmark report (index.html, or any SVG chart) in headless Chromium and saves a PNG,
# so a person can check that the page and its charts render.
#
#   scripts/screenshot-report.sh [PAGE] [OUT.png] [WIDTH,HEIGHT]
#
#   PAGE     index.html, a chart (.svg), or a results folder (default: ./benchmark_results)
#   OUT.png  where to write the screenshot (default: PAGE with .png, e.g. index.png)
#   SIZE     the window in CSS pixels (default: 1280,4200 for a page, 960,540 for an SVG)
#
# Needs Debian's chromium (apt-get install -y chromium). Every network feature is turned off:
# the report is self-contained and must render from disk alone.
set -euo pipefail

page=${1:-./benchmark_results}
if [[ -d $page ]]; then
    page=$page/index.html
fi
if [[ ! -f $page ]]; then
    echo "error: $page not found; write a report first: sagellm-benchmark run, or sagellm-benchmark report --format html" >&2
    exit 2
fi
out=${2:-${page%.*}.png}
case $page in
    *.svg) size=${3:-960,540} ;;
    *) size=${3:-1280,4200} ;;
esac

browser=""
for candidate in chromium chromium-browser google-chrome; do
    if command -v "$candidate" >/dev/null; then
        browser=$candidate
        break
    fi
done
if [[ -z $browser ]]; then
    echo "error: no Chromium found; install it with: apt-get update && apt-get install -y chromium" >&2
    exit 2
fi

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
abs_page=$(cd "$(dirname "$page")" && pwd)/$(basename "$page")
abs_out=$(cd "$(dirname "$out")" && pwd)/$(basename "$out")

# --no-sandbox: CI containers run as root, where Chromium's sandbox refuses to start.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --disable-default-apps --hide-scrollbars --user-data-dir="$profile" \
    --window-size="$size" --screenshot="$abs_out" "file://$abs_page" 2>"$profile/chromium.log" || {
    cat "$profile/chromium.log" >&2
    exit 1
}
if [[ ! -s $abs_out ]]; then
    cat "$profile/chromium.log" >&2
    echo "error: Chromium wrote no screenshot" >&2
    exit 1
fi
echo "$abs_out"
