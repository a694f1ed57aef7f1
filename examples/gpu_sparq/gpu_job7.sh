#!/usr/bin/env bash
# Third GPU session, part 5 (the chunked FMA step 1 "fmac" and the one-program tournament
# "tourk"), ~5 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job7.sh
# 1. the golden suites (fp16, bf16) through fmac + tourk (runs of 2, so that the small cases
#    take the tournament), checked;
# 2. tune.py at GQA, B=64, S=16k: chunked step-1 variants;
# 3. bench.py, every point, fp16 (configurations below) then bf16;
# 4. the large fp16 case (mha-b2-s16k, built here) through fmac + tourk.
# Everything ends up in $OUT/job7.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
set -u
OUT=${OUT:-results}
W=/tmp/job7
mkdir -p "$W/val"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
G=examples/gpu_sparq/_gold
BIG=/tmp/big
LOG=$W/job.log
say() { echo "[$SECONDS s] $*" | tee -a "$LOG"; }
END=${END:-440}
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
  ) &
fi
check() {
  [ "$HAVE_NUMBA" = 1 ] && timeout "$(left 60)" $PY -m sparq_cli check "$1" "$2" --json \
    > "$W/val/check_$3.json" 2> "$W/val/check_$3.err"
}
NEW=fmac-bs2048-ch256-tourk2
for s in gold16 goldbf; do
  step "gold_$s" 100 60 $PY examples/gpu_sparq/run_golden.py $G/$s $W/val/out_$s --config $NEW
  check $G/$s $W/val/out_$s ${s}_$NEW
  rm -rf $W/val/out_$s
done
step tune_h8 140 40 $PY examples/gpu_sparq/tune.py --out $W/tune_h8.json --B 64 --S 16384 \
  --hkv 8 --rk "32,128" --selects "tour8,tourk8" \
  --step1 "fma-bs2048-w4,fmac-bs1024-w4,fmac-bs2048-w4,fmac-bs4096-w4,fmac-bs2048-w8,fmac-bs2048-w2"
CF="fma-bs2048-tour8,fma-bs2048-tourk8,fmac-bs2048-tourk8,fmac-bs2048-ch512-tourk8"
CF="$CF,fmac-bs2048-ss2-tourk8,fma-bs1024-bk64-tp4096-tourk8,fmac-bs2048-bk64-tp4096-tourk8"
CF="$CF,fma-bs1024-topk"
step bench16 200 150 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3b_fp16.json \
  --budget-s 120 --configs "$CF"
step benchbf 330 90 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3b_bf16.json \
  --dtype bfloat16 --budget-s 70 \
  --configs "fma-bs2048-tourk8,fmac-bs2048-tourk8,fmac-bs2048-bk64-tp4096-tourk8,fma-bs1024-topk"
if [ "$HAVE_NUMBA" = 1 ]; then
  for s in mha16; do
    if [ -f $BIG/$s/manifest.json ]; then
      step big_$s 400 25 $PY examples/gpu_sparq/run_golden.py $BIG/$s $W/val/out_$s --config fmac-bs2048-tourk8
      check $BIG/$s $W/val/out_$s ${s}_fmac-bs2048-tourk8
      rm -rf $W/val/out_$s
    fi
  done
fi
say "packing"
mkdir -p "$OUT"
tar czf "$OUT/job7.tgz" -C "$W" . 2>/dev/null
ls -la "$OUT"; cat "$LOG"
