#!/usr/bin/env bash
# Third GPU session, part 1 (the row-loop step 1 and the tournament selection), ~8 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job3.sh
# 1. the golden suites through the new paths (fp16 and bf16), checked with `sparq check`;
# 2. tune.py at B=64, S=16k (MHA and GQA; r=32 k=128 and r=16 k=S/8): every step-1 variant
#    alone, then every selection with the fastest step 1;
# 3. bench.py at B=64, S=16k and S=64k with the candidate configurations;
# 4. a large validation case (mha-b2-s16k, built here) through the tuned path.
# Everything ends up in $OUT/job3.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
set -u
OUT=${OUT:-results}
W=/tmp/job3
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
      --name mha-b2-s16k --r 32 --k 128 --local-window 32 --holes > "$W/val/gen_mha16.log" 2>&1 ) &
fi
check() {
  [ "$HAVE_NUMBA" = 1 ] && timeout "$(left 60)" $PY -m sparq_cli check "$1" "$2" --json \
    > "$W/val/check_$3.json" 2> "$W/val/check_$3.err"
}
run() {  # run NAME SUITE ARGS...: golden suite through the kernels, then the checker
  local name=$1 suite=$2; shift 2
  step "gold_$name" 200 90 $PY examples/gpu_sparq/run_golden.py $G/$suite $W/val/out_$name "$@"
  check $G/$suite $W/val/out_$name $name
  rm -rf $W/val/out_$name
}
run gold16_loop_tour2 gold16 --step1 loop --select tour --tour 2
run goldbf_loop_tour2 goldbf --step1 loop --select tour --tour 2
run gold16_fma_tour4 gold16 --step1 fma --select tour --tour 4
run gold16_dot_tour4 gold16 --step1 dot --select tour --tour 4
for hkv in 32 8; do
  step tune_h$hkv 330 150 $PY examples/gpu_sparq/tune.py --out $W/tune_h$hkv.json \
    --B 64 --S 16384 --hkv $hkv --rk "32,128;16,0"
done
step bench_b64 430 120 $PY examples/gpu_sparq/bench.py --out $W/bench_b64.json \
  --seqs 16384,65536 --batches 64 --budget-s 90 \
  --configs "fma-topk,dot-topk,loop-topk,loop-tour16,loop-bs1024-tour16,loop-bs1024-w8-tour16,dot-tour16"
if [ "$HAVE_NUMBA" = 1 ] && [ -f $BIG/mha16/manifest.json ]; then
  step big_mha16 480 40 $PY examples/gpu_sparq/run_golden.py $BIG/mha16 $W/val/out_mha16 \
    --step1 loop --select tour --tour 16
  check $BIG/mha16 $W/val/out_mha16 mha16_loop_tour16
  rm -rf $W/val/out_mha16
fi
say "packing"
mkdir -p "$OUT"
tar czf "$OUT/job3.tgz" -C "$W" . 2>/dev/null
ls -la "$OUT"; cat "$LOG"
