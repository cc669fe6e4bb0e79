#!/usr/bin/env bash
# Retrain the default weights on the wide scene family and measure them on scenes training never
# saw, in one run a GPU session can leave detached and poll (README: "Retraining on a GPU").
#
#   bash .ci/gpu-train.sh [--detach] [--minutes 8] [--steps 100000] [--batch 4] [--pool 2000]
#                         [--out DIR] [--cases seed] [--scenes 40] [--device auto] [--python PY]
#                         [-- more train options, e.g. --height 64 --width 96 --num-depth 16]
#
# Steps, in order:
#   train     python -m harness train --family wide --resume --max-minutes M --out DIR/mvsnet-wide.ckpt:
#             a chunk (250 steps) at a time, each saved with its state, one flushed log line each.
#             Running the script again continues the same run (--resume; --max-minutes counts every
#             chunk so far), so a run cut short is finished by running the same command again; a
#             new run needs a new --out (train refuses to resume a state written with other options).
#   evaluate  python -m harness accuracy --cases C --scenes N on the held-out families independent
#             (never trained on) and classic (the project's own held-out scenes, the README's
#             figures), for the new weights and for the bundled ones.
#   summary   DIR/summary.json: steps, minutes of training, and per family mean abs error (mm) and
#             thres2mm/thres4mm/thres8mm for the new and the bundled weights.
# Files in DIR (default reports/gpu-train/, not committed): run.log (everything printed; poll it),
# status (running / done <exit> / failed <step> <exit>), mvsnet-wide.ckpt (MVSNet_pytorch format),
# its .state.pt, .log.jsonl and .summary.json, accuracy-<weights>-<family>.json, summary.json.
# --detach starts the same command in the background (setsid nohup), prints its pid and the files
# to poll, and returns at once. Exit status: 0 when every step passed, else the failing step's.
set -uo pipefail
cd "$(dirname "$0")/.."

detach=0 minutes=8 steps=100000 batch=4 pool=2000 out=reports/gpu-train cases=seed scenes=40 device=auto
py=${PYTHON:-}
extra=()
args=("$@")
need() { [ $# -ge 2 ] && [ -n "$2" ] || { echo "gpu-train: $1 needs a value (see --help)" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --detach) detach=1 ;;
    --minutes) need "$@"; minutes=$2; shift ;;
    --steps) need "$@"; steps=$2; shift ;;
    --batch) need "$@"; batch=$2; shift ;;
    --pool) need "$@"; pool=$2; shift ;;
    --out) need "$@"; out=$2; shift ;;
    --cases) need "$@"; cases=$2; shift ;;
    --scenes) need "$@"; scenes=$2; shift ;;
    --device) need "$@"; device=$2; shift ;;
    --python) need "$@"; py=$2; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1' "$0"; exit 0 ;;
    *) echo "gpu-train: unknown argument $1. Expected: --detach, --minutes M, --steps N, --batch N, --pool N," \
            "--out DIR, --cases LIST, --scenes N, --device D, --python PY, then -- and train options" >&2; exit 2 ;;
  esac
  shift
done
case "$minutes" in ''|*[!0-9.]*|*.*.*) minutes_ok=0 ;; *) minutes_ok=$(awk -v m="$minutes" 'BEGIN { print (m > 0) ? 1 : 0 }') ;; esac
if [ "$minutes_ok" -ne 1 ]; then
  echo "gpu-train: --minutes must be a number of minutes > 0 (the run's time box), got '$minutes' (e.g. --minutes 8)" >&2
  exit 2
fi
for pair in "steps:$steps" "batch:$batch" "pool:$pool" "scenes:$scenes"; do
  case "${pair#*:}" in ''|*[!0-9]*|0) echo "gpu-train: --${pair%%:*} must be a whole number >= 1, got '${pair#*:}'" >&2; exit 2 ;; esac
done
if [ -z "$py" ]; then
  if [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
fi
if ! "$py" -c "import harness.train" 2>/dev/null; then
  echo "gpu-train: $py cannot import harness.train. Fix: set up .venv as the README says, or pass --python" \
       "(and PYTHONPATH=$PWD when the harness is not installed in it)" >&2
  exit 2
fi
mkdir -p "$out" || { echo "gpu-train: cannot create --out $out" >&2; exit 2; }

if [ "$detach" -eq 1 ]; then
  rest=()
  for a in ${args[@]+"${args[@]}"}; do [ "$a" = "--detach" ] || rest+=("$a"); done
  echo "running" > "$out/status"
  setsid nohup bash "$0" ${rest[@]+"${rest[@]}"} > "$out/run.log" 2>&1 < /dev/null &
  echo "gpu-train: started pid $! in the background"
  echo "  poll:    tail -n 5 $out/run.log; cat $out/status"
  echo "  result:  $out/summary.json (when status reads 'done 0')"
  exit 0
fi

export PYTHONUNBUFFERED=1
echo "running" > "$out/status"
ckpt="$out/mvsnet-wide.ckpt"
fail() { echo "failed $1 $2" > "$out/status"; echo "gpu-train: step $1 failed (exit $2)" >&2; exit "$2"; }
# SIGTERM/SIGINT go on to the running step (train saves its chunk and stops); the script then
# records "stopped" and exits 128 + N; the same command run again resumes.
child=0 stopped=""
forward() { stopped=$1; [ "$child" -eq 0 ] || kill -"$1" "$child" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT
run() {
  "$@" &
  child=$!
  while kill -0 "$child" 2>/dev/null; do wait "$child"; done
  wait "$child"
  local rc=$?
  child=0
  if [ -n "$stopped" ]; then
    echo "stopped $stopped (run the same command again to resume)" > "$out/status"
    echo "gpu-train: stopped by SIG$stopped; run the same command again to resume" >&2
    [ "$rc" -gt 128 ] || rc=$((128 + $(kill -l "$stopped")))
    exit "$rc"
  fi
  return "$rc"
}

echo "== gpu-train step train: $(date -u +%FT%TZ)"
run "$py" -m harness train --family wide --resume --steps "$steps" --batch "$batch" --pool "$pool" \
    --max-minutes "$minutes" --device "$device" --out "$ckpt" ${extra[@]+"${extra[@]}"}
rc=$?; [ "$rc" -eq 0 ] || fail train "$rc"

for weights in new bundled; do
  for family in independent classic; do
    echo "== gpu-train step evaluate: $weights weights on $family: $(date -u +%FT%TZ)"
    wflag=(); [ "$weights" = new ] && wflag=(--weights "$ckpt")
    run "$py" -m harness accuracy --family "$family" --cases "$cases" --scenes "$scenes" --device "$device" \
        ${wflag[@]+"${wflag[@]}"} --report-dir "$out/reports" --json "$out/accuracy-$weights-$family.json"
    rc=$?; [ "$rc" -eq 0 ] || fail "evaluate-$weights-$family" "$rc"
  done
done

echo "== gpu-train step summary: $(date -u +%FT%TZ)"
"$py" - "$out" "$ckpt" <<'EOF'
import json
import sys
from pathlib import Path

out, ckpt = Path(sys.argv[1]), Path(sys.argv[2])
train = json.loads(ckpt.with_suffix(".summary.json").read_text())
keys = ("mae_mm", "thres2mm", "thres4mm", "thres8mm", "mean_confidence")
evaluation = {}
for family in ("independent", "classic"):
    for weights in ("new", "bundled"):
        for result in json.loads((out / f"accuracy-{weights}-{family}.json").read_text())["results"]:
            row = evaluation.setdefault(family, {}).setdefault(result["case"], {"shape": result["shape"],
                                                                                 "scenes": result["scenes"]})
            row[weights] = {k: round(float(result[k]), 4) for k in keys}
summary = {"weights": str(ckpt), "bytes": ckpt.stat().st_size, "family": train["config"]["family"],
           "steps": train["steps_done"], "minutes": train["training_minutes"], "stopped": train["stopped"],
           "config": train["config"], "final_validation": train["final"].get("valid"), "evaluation": evaluation}
(out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"steps {summary['steps']} in {summary['minutes']} min of training ({summary['stopped']})")
for family, cases in evaluation.items():
    for case, row in cases.items():
        for weights in ("new", "bundled"):
            m = row[weights]
            print(f"{family:<12} {case:<5} {weights:<8} mae {m['mae_mm']:7.2f} mm  thres2mm {m['thres2mm']:.3f}  "
                  f"thres4mm {m['thres4mm']:.3f}  thres8mm {m['thres8mm']:.3f}")
print(f"summary: {out / 'summary.json'}")
EOF
rc=$?; [ "$rc" -eq 0 ] || fail summary "$rc"
echo "done 0" > "$out/status"
