#!/usr/bin/env bash
# The GPU job, reproducible by hand: what .github/workflows/gpu.yml runs on a self-hosted NVIDIA
# runner, in one script a user runs on any GPU machine from the repository root.
#
#   bash .ci/gpu-gate.sh [--no-setup] [--label NAME] [--cases seed,dtu] [--workers N] [--fail-on median:15%]
#
# Steps, in order (each timed, its exit code kept; a table of them is printed at the end and
# appended to $GITHUB_STEP_SUMMARY when that is set):
#   setup    the README's set-up in .venv/, then onnxruntime-gpu in place of onnxruntime and,
#            optionally, TensorRT from NVIDIA's index (its failure only warns: the TensorRT legs
#            then skip with "tensorrt not importable"). --no-setup uses $PYTHON (default python3)
#            as it is, e.g. a machine whose packages were installed another way.
#   doctor   python -m harness doctor --require torch-cuda,ort-cuda: stops the job when this
#            machine cannot run the GPU legs, with the reason.
#   gate     python -m pytest suites --harness-profile full -n N --dist worksteal --durations=15:
#            N pytest-xdist workers share the GPU (default: half the CPU cores, at most 8, and at
#            most one per 32 GiB of GPU memory, as nvidia-smi reports it; each worker's torch and
#            ONNX Runtime CPU sessions take cores/N threads; --workers 0 runs one process); idle
#            workers take queued tests from busy ones (worksteal). The gate's
#            benchmark tests skip under xdist (their timing is the bench step's); the parity,
#            export, audit, property and sensitivity tests spread over the workers.
#   bench    python -m harness bench --cases seed,dtu --profile full
#   compare  python -m harness compare <the bench's run.json> --fail-on median:15% against the
#            committed baseline of the same GPU model (reports/baselines/); a GPU without one is
#            reported, not failed. 15 %: twice the widest spread of one backend's median measured
#            between two H200 machines running the same compile settings (torch-fast-fp16 at DTU,
#            27.99 and 29.98 ms: 7.1 %; reports/baselines/README.md). On one machine, three repeats
#            spread by at most 1.7 % (H100), so a runner that keeps its baseline may pass 5%.
# Exit status: 0 when every step passed, else the first failing step's status.
set -uo pipefail
cd "$(dirname "$0")/.."

setup=1
label="${HOSTNAME:-$(uname -n)}"
cases="seed,dtu"
fail_on="median:15%"
cores=$(nproc 2>/dev/null || echo 2)
workers=$((cores / 2)); [ "$workers" -gt 8 ] && workers=8; [ "$workers" -lt 1 ] && workers=1
# Every worker keeps its ONNX Runtime CUDA sessions (each with its own memory arena) and torch's
# cache: 8 workers on one H200 (139 GiB) ran out of GPU memory (6 ONNX Runtime CUDA allocation
# failures, 2026-12-03), so a worker gets at least 32 GiB.
GIB_PER_WORKER=32
gpu_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits -i 0 2>/dev/null | head -n 1 | tr -dc 0-9)
if [ -n "$gpu_mib" ]; then
  by_memory=$((gpu_mib / 1024 / GIB_PER_WORKER)); [ "$by_memory" -lt 1 ] && by_memory=1
  [ "$workers" -gt "$by_memory" ] && workers=$by_memory
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --no-setup) setup=0 ;;
    --label) label="${2:?--label needs a value}"; shift ;;
    --cases) cases="${2:?--cases needs a value}"; shift ;;
    --fail-on) fail_on="${2:?--fail-on needs a value, e.g. median:15%}"; shift
               # checked here, not after the gate and the bench: the syntax of the compare step's --fail-on
               [[ "$fail_on" =~ ^(min|median|mean|p90|p95|p99):[0-9]+(\.[0-9]+)?%$ ]] || {
                 echo "gpu-gate: --fail-on $fail_on: expected <min|median|mean|p90|p95|p99>:<percent>%, e.g. median:15%" >&2; exit 2; } ;;
    --workers) workers="${2:?--workers needs a value}"; shift
               [[ "$workers" =~ ^[0-9]+$ ]] || { echo "gpu-gate: --workers $workers: expected a whole number (0: no xdist)" >&2; exit 2; } ;;
    -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
    *) echo "gpu-gate: unknown argument $1. Expected: --no-setup, --label NAME, --cases LIST, --workers N, --fail-on GATE" >&2; exit 2 ;;
  esac
  shift
done
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

names=(); codes=(); seconds=()
first_failure=0
step() {  # step NAME COMMAND...: run, time and record one step
  local name=$1; shift
  if [ -n "${GITHUB_ACTIONS:-}" ]; then echo "::group::gpu-gate step $name: $*"; else echo "== gpu-gate step $name: $*"; fi
  local started=$SECONDS
  "$@"
  local rc=$?
  [ -z "${GITHUB_ACTIONS:-}" ] || echo "::endgroup::"
  names+=("$name"); codes+=("$rc"); seconds+=($((SECONDS - started)))
  if [ "$rc" -ne 0 ] && [ "$first_failure" -eq 0 ]; then first_failure=$rc; fi
  return "$rc"
}
skip() { names+=("$1"); codes+=("-"); seconds+=(0); }

do_setup() {
  python3 -m venv .venv && .venv/bin/pip install -q -c .ci/constraints.txt -e ".[test]" || return
  .venv/bin/pip uninstall -q -y onnxruntime && .venv/bin/pip install -q onnxruntime-gpu || return
  if ! .venv/bin/pip install -q --extra-index-url https://pypi.nvidia.com tensorrt; then
    echo "gpu-gate: warning: TensorRT not installed (pip install tensorrt from https://pypi.nvidia.com failed);" \
         "the TensorRT legs will skip with 'tensorrt not importable'" >&2
  fi
}

if [ "$setup" -eq 1 ]; then
  step setup do_setup
  PY=.venv/bin/python
else
  skip setup
  PY=${PYTHON:-python3}
fi

bench_log=$(mktemp)
trap 'rm -f "$bench_log"' EXIT
if [ "$first_failure" -eq 0 ] && step doctor "$PY" -m harness doctor --require torch-cuda,ort-cuda; then
  xdist=(); [ "$workers" -gt 0 ] && xdist=(-n "$workers" --dist worksteal)
  step gate "$PY" -m pytest suites --harness-profile full "${xdist[@]}" --durations=15
  if step bench bash -c '"$0" -m harness bench --cases "$1" --profile full --label "$2" | tee "$3"' \
      "$PY" "$cases" "$label" "$bench_log"; then
    run_json=$(sed -n 's/^report: \(.*\)\/report\.md$/\1\/run.json/p' "$bench_log" | tail -n 1)
    if [ -n "$run_json" ] && [ -f "$run_json" ]; then
      step compare "$PY" -m harness compare "$run_json" --fail-on "$fail_on"
    else
      echo "gpu-gate: the benchmark printed no 'report: <folder>/report.md' line; nothing to compare" >&2
      names+=("compare"); codes+=(1); seconds+=(0); [ "$first_failure" -eq 0 ] && first_failure=1
    fi
  else
    skip compare
  fi
else
  for s in doctor gate bench compare; do
    [[ " ${names[*]} " == *" $s "* ]] || skip "$s"
  done
fi

table="| step | exit | seconds |"$'\n'"|---|---|---|"
for i in "${!names[@]}"; do
  table+=$'\n'"| ${names[$i]} | ${codes[$i]} | ${seconds[$i]} |"
done
echo
echo "gpu-gate summary (exit '-' = not run):"
echo "$table"
if [ -n "${GITHUB_STEP_SUMMARY:-}" ]; then
  { echo "### GPU job steps"; echo; echo "$table"; echo; } >> "$GITHUB_STEP_SUMMARY"
fi
exit "$first_failure"
