#!/bin/sh
# Installs the Debian packages sluice builds and tests with, only those missing. Idempotent.
set -e
PKGS="build-essential libcjson-dev libcriterion-dev liburing-dev libzstd-dev libxxhash-dev libpcre2-dev pkg-config"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
$SUDO apt-get install -y -q $missing >/dev/null
