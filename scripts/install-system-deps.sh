#!/usr/bin/env bash
# What the test suite and the demo run against: PostgreSQL, Slurm with munge, Chromium
# (driven headless by Playwright for the dashboard's browser tests; never downloaded),
# stress-ng (keeps every CPU busy for `make test-busy`), and RELION (Debian's relion: the
# CPU build with MPI, whose relion_project makes the demo's data and whose relion_refine
# classifies it at a site; the agent measures it and reports it), podman with runc and
# busybox-static (TES tasks in containers). Installed
# from Debian's packages when running as root and missing. The tests start their own
# instances on loopback in temp dirs; nothing here starts a service.
# Under CI=true a component that cannot be installed is an error, never a silent skip.
set -euo pipefail

have_pg() { compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; }
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }

need=()
have_pg || need+=(postgresql)
have slurmctld && have slurmd || need+=(slurm-wlm)
have munged || need+=(munge)
[ -x /usr/bin/chromium ] || need+=(chromium)
have stress-ng || need+=(stress-ng)
have relion_refine && have relion_project && have mpirun || need+=(relion)
# Rootful podman runs TES tasks' containers (tests/podman.py: runc, since crun 1.8 refuses
# hybrid cgroups), on an image made of busybox-static (a static /bin/busybox).
have podman || need+=(podman)
have runc || need+=(runc)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || need+=(busybox-static)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing from Debian's packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends "${need[@]}" >/dev/null
  # Debian's postinst may start a default PostgreSQL cluster; the tests do not use it.
  exit 0
fi

echo "missing: ${need[*]}; install them (Debian: apt-get install ${need[*]}) or run as root" >&2
if [ "${CI:-}" = "true" ]; then
  exit 1
fi
echo "continuing: tests that need them will be skipped (they fail under CI=true)" >&2
