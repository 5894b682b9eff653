#!/usr/bin/env bash
# Set up everything calico-bgp needs on a Debian machine, then run one job:
#   ./bootstrap.sh demo   bring up the default lab topology and print peer and route status
#   ./bootstrap.sh test   run the whole test suite
# Idempotent: a second run only checks what the first one installed.
set -euo pipefail
cd "$(dirname "$0")"
job=${1:-}
case "$job" in demo|test|setup) ;; *) echo "usage: $0 demo|test|setup" >&2; exit 2 ;; esac
shift || true

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

APT_PACKAGES=(
  etcd-server etcd-client            # the datastore
  bird2 frr gobgpd                   # fabric routers for tests and the lab
  iproute2 nftables iptables ipset   # kernel plumbing and the filter fallback
  clang llvm libbpf-dev gcc-multilib # building the XDP object
  make libbpf1                       # its Makefile; libbpf.so.1, through which the agent loads it
  prometheus                         # promtool, to check our alert rules
  containernetworking-plugins        # reference CNI plugins our IPAM runs under
  python3-venv procps psmisc iputils-ping
  pypy3 pypy3-venv                   # ExaBGP under PyPy, on request (README "ExaBGP under PyPy")
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  step "apt: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  step "apt: all ${#APT_PACKAGES[@]} packages present"
fi

PY=${PYTHON:-python3}
stamp=.venv/.stamp-$(cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
if [ ! -x .venv/bin/python ]; then
  step "venv: creating .venv with $($PY --version)"
  $PY -m venv .venv
fi
if [ ! -f "$stamp" ]; then
  step "venv: installing calico-bgp and its pinned dependencies"
  log=.venv/pip-install.log
  if ! { .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -c constraints.txt -e '.[test]'; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2; echo "pip install failed; full log in $log" >&2; exit 1
  fi
  rm -f .venv/.stamp-*; touch "$stamp"
else
  step "venv: up to date"
fi

# bytecode for our packages, as a package install writes it: every agent, ExaBGP and bridge start loads it
# instead of compiling ~150 modules again (~0.17 s of CPU per agent; PYTHONDONTWRITEBYTECODE=1 in an
# environment would otherwise make each process compile from source). Quick when nothing changed.
step "bytecode: compiling calico_bgp, dataplane, ipam"
.venv/bin/python -m compileall -q calico_bgp dataplane ipam >/dev/null
.venv/bin/python -c 'from calico_bgp.cli.attrs_cache import prime; prime()'  # attrs' generated methods too (calico_bgp/cli/attrs_cache.py)

# ExaBGP under PyPy: a venv of its own holding the pinned exabgp, which imports our entry point through
# a .pth naming this checkout. The stamp is written only once both import under PyPy: the agent runs
# ExaBGP there when CALICO_BGP_EXABGP_RUNTIME asks for it (calico_bgp/speaker/process.py), else .venv's CPython.
PYPY_VENV=.venv-exabgp-pypy
exabgp_pin=$(grep -i '^exabgp==' constraints.txt)
pypy_stamp=$PYPY_VENV/.stamp-$( { echo "$exabgp_pin"; pwd; } | sha1sum | cut -c1-12)
if [ ! -f "$pypy_stamp" ]; then
  step "pypy venv: $exabgp_pin under $(pypy3 --version 2>&1 | tail -n 1)"
  log=$(mktemp)
  if ! { { [ -x $PYPY_VENV/bin/python ] || pypy3 -m venv $PYPY_VENV; } \
         && $PYPY_VENV/bin/pip install -q -c constraints.txt "$exabgp_pin" \
         && pwd > "$($PYPY_VENV/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/calico-bgp.pth" \
         && $PYPY_VENV/bin/python -c 'import exabgp.application.main, calico_bgp.speaker.exabgp_run as r; r.patch()'; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2; echo "the PyPy venv for ExaBGP failed (log above); ExaBGP runs under CPython" >&2
  else
    rm -f $PYPY_VENV/.stamp-*; touch "$pypy_stamp"
  fi
  rm -f "$log"
else
  step "pypy venv: up to date"
fi

# the API process ExaBGP runs, in C (calico_bgp/speaker/bridge.c: ~1 MB where bridge.py's interpreter holds ~10);
# without it the speaker runs bridge.py
step "bridge: building calico_bgp/speaker/calico-bgp-bridge"
make -s -C calico_bgp/speaker || echo "the compiled bridge did not build (above); ExaBGP runs bridge.py" >&2

if [ -f dataplane/filters/xdp/Makefile ]; then
  step "xdp: building the filter object"
  make -s -C dataplane/filters/xdp
fi

case "$job" in
  setup) step "set-up done: .venv/bin/calico-bgp is the CLI" ;;
  test)
    if [ "${CI:-}" = true ]; then
      step "tests: unit, integration, e2e (CI=true: a skip for something missing fails the run)"
    else
      step "tests: unit, integration, e2e"
    fi
    exec .venv/bin/python -m pytest "$@"
    ;;
  demo)
    step "demo: bringing up the default topology"
    exec .venv/bin/python -m lab.demo "$@"
    ;;
esac
