#!/usr/bin/env bash
# Builds the Snakemake environment exactly as locked in requirements.txt (hashes checked).
#
#   deploy/snakemake/make-env.sh DIR [UV]
#
# One environment serves both sides of a Snakemake workflow on the network:
#  - the researcher runs `DIR/bin/snakemake --executor tes ...` from it;
#  - a site maps the image its TES tasks name to it: `[tes] image_bin_dirs` puts DIR/bin
#    first on the PATH of the task, so the plugin's job script finds `python -m snakemake`
#    and `pip` there (docs/workflows.md).
# The plugin's job script runs `pip install --target .snakemake/pip-deployments <storage
# plugins>` inside every task. This environment already holds them, so its pip is set up to
# install only from the environment's own wheels (downloaded here, at install time) and
# without dependencies: nothing is downloaded while a task runs.
set -euo pipefail
dir=$1
uv=${2:-uv}
here=$(cd "$(dirname "$0")" && pwd)

"$uv" venv --quiet --allow-existing --python "${PYTHON:-python3}" "$dir"
# Byte-compiled: each task starts Python three times (snakemake, its job script, the rule).
"$uv" pip sync --quiet --require-hashes --compile-bytecode --python "$dir/bin/python" "$here/requirements.txt"

# The storage plugins' wheels, with their locked hashes, for the job script's pip.
rm -rf "$dir/wheels" "$dir/pip.conf"  # (a pip.conf of an earlier run would keep pip offline)
awk '/^snakemake-storage-plugin-/ {keep = 1} keep {print} keep && !/\\$/ {keep = 0}' \
    "$here/requirements.txt" >"$dir/storage-plugins.txt"
"$dir/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary :all: \
    --require-hashes -r "$dir/storage-plugins.txt" -d "$dir/wheels"

cat >"$dir/pip.conf" <<EOF
# Written by deploy/snakemake/make-env.sh: the Snakemake job script's pip installs only
# from this environment's own wheels, without dependencies (the environment has them).
[global]
no-index = true
find-links = $(cd "$dir" && pwd)/wheels
disable-pip-version-check = true
[install]
no-deps = true
EOF
