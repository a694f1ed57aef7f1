#!/usr/bin/env bash
# Third GPU session, part 3 (the prologue's components by one sort; gathered-attention knobs),
# ~8 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job5.sh
# 1. the golden suites (fp16, bf16) through the benchmark's path with the sorted prologue;
# 2. bench.py, every point, fp16 then bf16, the configurations of bench.DEFAULT_CONFIGS
#    (bf16: the three step-1/selection ones);
# 3. Nsight Compute: step 1 at GQA (B=64, S=16k, r=32, k=128) and the gathered attention at
#    MHA, r=16, k=S/8;
# 4. two large cases built here (mha-b2-s16k fp16, gqa-s32k-k4096 bf16).
# Everything ends up in $OUT/job5.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
set -u
OUT=${OUT:-results}
W=/tmp/job5
mkdir -p "$W/val" "$W/ncu"
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
  ncu --version
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
PICK=(--step1 fma --bs 2048 --select tour)
for s in gold16 goldbf; do
  step "gold_$s" 100 90 $PY examples/gpu_sparq/run_golden.py $G/$s $W/val/out_$s "${PICK[@]}" --tour 2
  check $G/$s $W/val/out_$s ${s}_fma2048_psort_tour2
  rm -rf $W/val/out_$s
done
step bench16 220 150 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3_fp16.json --budget-s 130
step benchbf 320 100 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3_bf16.json \
  --dtype bfloat16 --budget-s 80 --configs "fma-bs1024-topk,fma-bs1024-tour8,fma-bs2048-tour8"
NCU=(ncu --set full --clock-control none -f)
step ncu_gqa_step1 380 60 "${NCU[@]}" --kernel-name regex:_step1_kernel --launch-count 1 \
  -o $W/ncu/ncu_gqa_step1 $PY examples/gpu_sparq/ncu_driver.py --hkv 8 --step1 fma --bs 2048 \
  --select tour --tour 8 --stop step1
step ncu_mha_attend 430 50 "${NCU[@]}" --kernel-name regex:_attend_kernel --launch-count 1 \
  -o $W/ncu/ncu_mha_attend $PY examples/gpu_sparq/ncu_driver.py --hkv 32 --r 16 --k 2048 \
  --step1 fma --bs 1024 --select tour --tour 8 --stop none
for c in gqa_step1 mha_attend; do
  if [ -f $W/ncu/ncu_$c.ncu-rep ]; then
    ncu --import $W/ncu/ncu_$c.ncu-rep --page details > $W/ncu/ncu_${c}_details.txt 2>&1
    ncu --import $W/ncu/ncu_$c.ncu-rep --page raw --csv > $W/ncu/ncu_${c}_raw.csv 2>&1
    rm -f $W/ncu/ncu_$c.ncu-rep
  fi
done
if [ "$HAVE_NUMBA" = 1 ]; then
  for s in mha16 gqabf; do
    if [ -f $BIG/$s/manifest.json ]; then
      step big_$s 480 25 $PY examples/gpu_sparq/run_golden.py $BIG/$s $W/val/out_$s "${PICK[@]}" --tour 8
      check $BIG/$s $W/val/out_$s ${s}_fma2048_psort_tour8
      rm -rf $W/val/out_$s
    fi
  done
fi
say "packing"
mkdir -p "$OUT"
tar czf "$OUT/job5.tgz" -C "$W" . 2>/dev/null
ls -la "$OUT"; cat "$LOG"
