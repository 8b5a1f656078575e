#!/usr/bin/env bash
# Install the Debian packages that the tests use as real components (listed in scripts/debian-packages.txt:
# the Orthanc PACS with its DICOMweb plugin, dicom3tools' dciodvfy, Chromium), once: a package already
# installed is not asked for again, so a second run costs one dpkg query per package. Needs root (CI runs
# as root); elsewhere it prints the apt-get command to run and goes on, and the tests that need a missing
# program say so.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mapfile -t WANTED < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$ROOT/scripts/debian-packages.txt")
MISSING=()
for package in "${WANTED[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        MISSING+=("$package")
    fi
done
if [ "${#MISSING[@]}" -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian packages: ${MISSING[*]}" >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
    else
        echo "warning: missing Debian packages (tests that need them will fail): sudo apt-get install ${MISSING[*]}" >&2
    fi
fi
