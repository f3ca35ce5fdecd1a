#!/usr/bin/env bash
# Set up flowtrace on a Debian/Ubuntu machine, as root: bcc from the
# distribution, kernel headers wired up for bcc, tracefs mounted, and a
# virtual environment in .venv with flowtrace installed.
#
#   bash scripts/setup.sh          # what running pipelines needs
#   bash scripts/setup.sh --test   # also what the test suite needs
#
# Safe to re-run: every step checks first and does nothing when already done.
set -euo pipefail

cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (BPF tracing needs it): sudo bash scripts/setup.sh"
command -v apt-get >/dev/null || die "needs a Debian or Ubuntu machine (apt-get not found)"

release=$(uname -r)
packages=(python3-bpfcc python3-venv)
# nats-server: the fleet tests start real JetStream servers (tests/natsserver.py);
# jq and tmux: the CLI tests pipe NDJSON through jq and drive --live in tmux;
# iproute2 and binutils: the network lessons' tests build namespaces, read ELF
[ "$with_tests" -eq 1 ] && packages+=(gcc binutils systemtap-sdt-dev bpftrace iproute2 nats-server jq tmux)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Kernel headers: those of the running kernel when the distribution has them,
# otherwise the distribution's newest, wired up for bcc below.
headers_exact="linux-headers-$release"
if [ ! -e "/lib/modules/$release/build/include" ]; then
    apt_updated=1
    apt-get update -qq
    if apt-cache show "$headers_exact" >/dev/null 2>&1; then
        missing+=("$headers_exact")
    elif grep -qi ubuntu /etc/os-release; then
        missing+=(linux-headers-generic)
    else
        missing+=("linux-headers-$(dpkg --print-architecture)")
    fi
fi

if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    [ -n "${apt_updated:-}" ] || apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -e "/lib/modules/$release/build/include" ]; then
    nearest=$(ls -d /usr/src/linux-headers-*/ 2>/dev/null | grep -v -- '-common/$' | sort -V | tail -n 1)
    nearest=${nearest%/}
    [ -n "$nearest" ] || die "no kernel headers found under /usr/src"
    common=$(ls -d "${nearest%-*}-common" 2>/dev/null || echo "$nearest")
    mkdir -p "/lib/modules/$release"
    ln -sfn "$nearest" "/lib/modules/$release/build"
    ln -sfn "$common" "/lib/modules/$release/source"
    say "WARNING: no headers for kernel $release in the distribution;"
    say "WARNING: using $(basename "$nearest") instead. Tracepoints, uprobes and USDT work;"
    say "WARNING: reading kernel structs directly may see wrong offsets."
fi

# bcc reads tracefs under debugfs.
if [ ! -d /sys/kernel/debug/tracing/events ]; then
    mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug
fi

python=/usr/bin/python3
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "flowtrace needs Python 3.10 or newer as /usr/bin/python3"
if [ ! -x .venv/bin/python ]; then
    say "creating .venv"
    "$python" -m venv .venv
fi

# Make the distribution's bcc (pure Python over libbcc) importable in the
# venv without exposing the rest of the system's packages.
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
bcc_dir=$("$python" -c 'import bcc, os; print(os.path.dirname(os.path.dirname(bcc.__file__)))')
mkdir -p .venv/bcc-path
ln -sfn "$bcc_dir/bcc" .venv/bcc-path/bcc
echo "$PWD/.venv/bcc-path" > "$site/flowtrace-bcc.pth"

extras=""
[ "$with_tests" -eq 1 ] && extras="[test]"
stamp=".venv/.installed$extras"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing flowtrace$extras into .venv"
    .venv/bin/pip install -q --disable-pip-version-check -e ".$extras"
    echo "$want" > "$stamp"
fi
say "ready: .venv/bin/flowtrace"
