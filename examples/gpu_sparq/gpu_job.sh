#!/usr/bin/env bash
# One GPU session: validation (golden suites through the kernels, checked with `sparq check`
# where numba is importable) and the benchmark. Run from the repository root:
#   OUT=results bash examples/gpu_sparq/gpu_job.sh [BENCH_BUDGET_S]
# Golden suites: examples/gpu_sparq/_gold/{gold16,goldbf,real16} (built with `sparq golden`,
# see docs/gpu.md; not committed) and, with numba, two large cases built here.
# Written for commit 6d92e4d: later commits changed the defaults of run_golden.py and bench.py
# (now the FMA step 1 over 2048 positions and the tournament); check out 6d92e4d to repeat it.
set -u
OUT=${OUT:-results}
BUDGET=${1:-330}
export PYTHONPATH=.
mkdir -p "$OUT/val"
G=examples/gpu_sparq/_gold
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$OUT/env.txt"
python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" >> "$OUT/env.txt" 2>&1
if python -c "import numba, scipy, numpy" 2>/dev/null; then HAVE_NUMBA=1; else HAVE_NUMBA=0; fi
echo "numba: $HAVE_NUMBA" >> "$OUT/env.txt"
BIG=/tmp/big
if [ "$HAVE_NUMBA" = 1 ]; then  # large cases, built on the CPU while the GPU runs the rest
  ( python -m sparq_cli golden --out $BIG/mha16 --dtype float16 --shape 2,32,32,16384,128 \
      --name mha-b2-s16k --r 32 --k 128 --local-window 32 --holes > "$OUT/val/gen_mha16.log" 2>&1
    python -m sparq_cli golden --out $BIG/gqabf --dtype bfloat16 --shape 1,32,8,32768,128 \
      --name gqa-s32k-k4096 --r 16 --k 4096 --local-window 64 --holes > "$OUT/val/gen_gqabf.log" 2>&1
  ) &
  GEN=$!
fi
for s in gold16 goldbf real16; do
  python examples/gpu_sparq/run_golden.py $G/$s "$OUT/val/out_$s" > "$OUT/val/run_$s.log" 2>&1
  if [ "$HAVE_NUMBA" = 1 ]; then
    python -m sparq_cli check $G/$s "$OUT/val/out_$s" --json > "$OUT/val/check_$s.json" 2> "$OUT/val/check_$s.err"
  fi
done
python examples/gpu_sparq/run_golden.py $G/gold16 "$OUT/val/out_gold16_fma" --fma --select topk > "$OUT/val/run_gold16_fma.log" 2>&1
[ "$HAVE_NUMBA" = 1 ] && python -m sparq_cli check $G/gold16 "$OUT/val/out_gold16_fma" --json > "$OUT/val/check_gold16_fma.json" 2>&1
python examples/gpu_sparq/bench.py --out "$OUT/gpu_bench.json" --budget-s "$BUDGET" > "$OUT/bench.log" 2>&1
if [ "$HAVE_NUMBA" = 1 ]; then
  wait $GEN
  for s in mha16 gqabf; do
    python examples/gpu_sparq/run_golden.py $BIG/$s "$OUT/val/out_$s" > "$OUT/val/run_$s.log" 2>&1
    python -m sparq_cli check $BIG/$s "$OUT/val/out_$s" --json > "$OUT/val/check_$s.json" 2> "$OUT/val/check_$s.err"
  done
  rm -rf "$OUT"/val/out_mha16 "$OUT"/val/out_gqabf  # large; the check reports are kept
fi
tar czf "$OUT/all.tgz" -C "$OUT" val env.txt bench.log gpu_bench.json 2>/dev/null
ls -la "$OUT"
