#!/usr/bin/env bash
# Wheels for a lent GPU machine, which has Python and a CUDA torch but none of the service's
# other dependencies, and no network: the grader's runtime dependencies plus pytest, pinned
# to the versions installed here, for that machine's Python (default 3.12).
#
#   bash benchmarks/gpu/fetch_wheels.sh [PYTHON_VERSION]      # -> .gpu-wheels/ (git-ignored)
#
# Then, in one device call: run(command="bash benchmarks/gpu/run_on_device.sh",
# carry=[".gpu-wheels"]). The lent machine's own torch and numpy are used, never replaced.
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-3.12}
out=.gpu-wheels
rm -rf "$out" && mkdir -p "$out"
mapfile -t pins < <(python benchmarks/gpu/closure.py "$py" grader pytest pytest-timeout)
python -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform linux_x86_64 -d "$out" "${pins[@]}" \
    2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "$(ls "$out" | wc -l) wheels, $(du -sh "$out" | cut -f1) in $out for Python $py"
