#!/usr/bin/env bash
# Install Debian's chromium for the browser tests if it is missing (Playwright drives it
# through executable_path; no browser is downloaded). Needs root to install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-chromium.sh: chromium is missing; run 'apt-get install chromium' as root" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq chromium >&2
