#!/usr/bin/env bash
# Third GPU session, part 4 (final: the defaults of kernels.Config, i.e. three pipeline stages in
# the gathered attention again), ~5 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job6.sh
# 1. the golden suites (fp16, bf16) through the defaults, and with runs of 2 so that the small
#    cases take the tournament; checked;
# 2. bench.py, every point, fp16 then bf16 (bench.DEFAULT_CONFIGS; bf16: the first three);
# 3. two large cases built here (mha-b2-s16k fp16, gqa-s32k-k4096 bf16) through the defaults.
# Everything ends up in $OUT/job6.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
set -u
OUT=${OUT:-results}
W=/tmp/job6
mkdir -p "$W/val"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
G=examples/gpu_sparq/_gold
BIG=/tmp/big
LOG=$W/job.log
say() { echo "[$SECONDS s] $*" | tee -a "$LOG"; }
END=${END:-500}
left() { local t=$((END - SECONDS)); [ "$1" -lt "$t" ] && t=$1; [ "$t" -lt 1 ] && t=1; echo $t; }
step() {  # step NAME LATEST_START TIMEOUT CMD...
  local name=$1 late=$2 to; to=$(left "$3"); shift 3
  if [ "$SECONDS" -gt "$late" ]; then say "SKIP $name (elapsed past $late s)"; return 0; fi
  say "START $name"
  timeout "$to" "$@" > "$W/$name.log" 2>&1
  say "END $name rc=$?"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
} > "$W/env.txt" 2>&1
if $PY -c "import numba, scipy, numpy" 2>/dev/null; then HAVE_NUMBA=1; else HAVE_NUMBA=0; fi
echo "numba: $HAVE_NUMBA" >> "$W/env.txt"
if [ "$HAVE_NUMBA" = 1 ]; then
  ( $PY -m sparq_cli golden --out $BIG/mha16 --dtype float16 --shape 2,32,32,16384,128 \
      --name mha-b2-s16k --r 32 --k 128 --local-window 32 --holes > "$W/val/gen_mha16.log" 2>&1
    $PY -m sparq_cli golden --out $BIG/gqabf --dtype bfloat16 --shape 1,32,8,32768,128 \
      --name gqa-s32k-k4096 --r 16 --k 4096 --local-window 64 --holes > "$W/val/gen_gqabf.log" 2>&1
  ) &
fi
check() {
  [ "$HAVE_NUMBA" = 1 ] && timeout "$(left 60)" $PY -m sparq_cli check "$1" "$2" --json \
    > "$W/val/check_$3.json" 2> "$W/val/check_$3.err"
}
for s in gold16 goldbf; do
  step "gold_$s" 100 60 $PY examples/gpu_sparq/run_golden.py $G/$s $W/val/out_$s
  check $G/$s $W/val/out_$s ${s}_default
  rm -rf $W/val/out_$s
  step "gold_${s}_tour2" 140 60 $PY examples/gpu_sparq/run_golden.py $G/$s $W/val/out_$s --tour 2
  check $G/$s $W/val/out_$s ${s}_default_tour2
  rm -rf $W/val/out_$s
done
step bench16 260 150 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3_fp16.json --budget-s 130
step benchbf 360 100 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3_bf16.json \
  --dtype bfloat16 --budget-s 80 --configs "fma-bs2048-tour8,fma-bs1024-tour8,fma-bs1024-topk"
if [ "$HAVE_NUMBA" = 1 ]; then
  for s in mha16 gqabf; do
    if [ -f $BIG/$s/manifest.json ]; then
      step big_$s 470 25 $PY examples/gpu_sparq/run_golden.py $BIG/$s $W/val/out_$s
      check $BIG/$s $W/val/out_$s ${s}_default
      rm -rf $W/val/out_$s
    fi
  done
fi
say "packing"
mkdir -p "$OUT"
tar czf "$OUT/job6.tgz" -C "$W" . 2>/dev/null
ls -la "$OUT"; cat "$LOG"
