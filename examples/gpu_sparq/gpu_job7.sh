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
W=/tmp/job7
END=${END:-440}
source "$(dirname "$0")/_job_lib.sh"
gen_large mha16
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
pack job7
