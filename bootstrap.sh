#!/bin/sh
# Sets up everything swarmd needs on Debian 12 / Ubuntu: system packages, .venv, the package.
# Idempotent: a second run only checks. Run from anywhere; needs root or sudo for apt.
set -eu
cd "$(dirname "$0")"
# prometheus: promtool and the server, real clients for the metrics tests (/usr/bin/promtool,
# /usr/bin/prometheus); nothing of it runs at run time
PACKAGES="python3 python3-venv python3-dev gcc pkg-config libsystemd-dev systemd-container prometheus"
missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "bootstrap: installing$missing" >&2
    $SUDO apt-get update -qq
    # no Recommends: prometheus would bring node-exporter, smartmontools, ipmitool... whose
    # units start (and fail) on a host, and in every system-test container
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null
    case "$missing" in *prometheus*)
        # the tests run their own Prometheus; the one the package enables is not wanted here
        if [ -d /run/systemd/system ]; then
            $SUDO systemctl disable --now --quiet prometheus.service 2>/dev/null || true
        fi;;
    esac
fi
# Debian's own Python: it lives under /usr, which the system tests' container shares.
if [ ! -x .venv/bin/python ]; then
    /usr/bin/python3 -m venv .venv
fi
# The package with its dependencies and console script, then the installed copy of its code
# swapped for the checkout on sys.path (a .pth): edits take effect without reinstalling, and no
# import hook costs every start. (What setuptools' editable modes do, without their warnings.)
STAMP="checkout-pth $(cksum < pyproject.toml)"
if ! .venv/bin/python -c "import swarmd, systemd.journal, sdnotify, yaml, pytest" 2>/dev/null \
   || [ "$(cat .venv/.installed 2>/dev/null)" != "$STAMP" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q --force-reinstall --no-deps .
    .venv/bin/python -m pip install -q '.[test]'
    SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    rm -rf "$SITE/swarmd"
    pwd > "$SITE/swarmd-checkout.pth"
    echo "$STAMP" > .venv/.installed
fi
# Bytecode for the package, written now: the service runs with a read-only /opt
# (ProtectSystem=strict), where Python could not cache it and would compile every module at
# every start (~20 ms). Only stale files are recompiled.
.venv/bin/python -m compileall -q swarmd
echo "bootstrap: ready (.venv/bin/swarmd)" >&2
