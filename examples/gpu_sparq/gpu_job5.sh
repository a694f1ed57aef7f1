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
# Ran at commit 372833a; later commits changed bench.py's default configurations and Config's
# defaults, so check out 372833a to repeat it exactly.
set -u
W=/tmp/job5
END=${END:-500}
source "$(dirname "$0")/_job_lib.sh"
mkdir -p "$W/ncu"
gen_large mha16 gqabf
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
pack job5
