#!/bin/bash
# Issue 21's GPU targets in one prepared run (at most 9 min 10 s of steps), for a session that is lent a GPU:
#   population of 16 >= 6x the settings x steps per second of sequential runs (bench_ablation);
#   the training loop within 5 % of the bare step (bench_train --loop_epochs);
#   the maths layer <= 0.33x the PyTorch peers on the GPU (bench_core);
#   one fold's full Table 1 by population in <= 10 min (experiments.ablation on the phantom: 576 training pairs a
#   fold, about ACDC's 640, the paper's schedule).
# Every table goes to $OUT (default runs/gpu). From the repository root, nothing installed:
#   PYTHONPATH=. bash benchmarks/gpu_session.sh
# Each step has its own time limit, so a slow one cannot starve the rest; the order is the targets' priority.
set -u
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-.}"
PY=${PY:-python3}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; $PY -m pip list 2>/dev/null \
  | grep -i -E "^(jax|jaxlib|flax|optax|orbax-checkpoint|torch|numpy|absl-py) "; \
  $PY -c "import jax; print(jax.devices())"; } > "$OUT/device.txt" 2>&1
step() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  echo "$name: rc $? in $((SECONDS - t0)) s" | tee -a "$OUT/summary.txt"
}
step bench_ablation 110 $PY benchmarks/bench_ablation.py --sizes 1,4,16 --steps 8 --repeats 3
step bench_train 100 $PY benchmarks/bench_train.py --repeats 20 --loop_epochs 3 --loop_pairs 576
# killed at its limit, its metrics (seconds an epoch) still give the fold's time: 40 epochs + scoring
step table1_population 270 $PY -m experiments.ablation --config paper --method population --schedule paper \
  --folds 0 --workdir "$OUT/work" --noprogress
step bench_core 60 $PY benchmarks/bench_core.py --repeats 10
cp "$OUT/work/ablation.md" "$OUT/ablation.md" 2>/dev/null
cp "$OUT/work/population/fold0/metrics.jsonl" "$OUT/table1_population_metrics.jsonl" 2>/dev/null
rm -rf "$OUT/work"  # checkpoints: not wanted back (8 files at most come back)
cat "$OUT/summary.txt"
