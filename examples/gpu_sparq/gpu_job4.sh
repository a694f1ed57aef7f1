#!/usr/bin/env bash
# Third GPU session, part 2 (after gpu_job3.sh picked step 1 at 1024 positions per program and
# the tournament selection), ~7.5 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job4.sh
# 1. the golden suites (fp16, bf16) through the benchmark's path (FMA step 1, 1024 positions,
#    tournament; runs of 2 so that the small cases take the tournament), checked;
# 2. tune.py: more step-1 variants at B=64, S=16k, r=32, k=128 (MHA and GQA);
# 3. bench.py, every point (fp16), the configurations of bench.DEFAULT_CONFIGS;
# 4. two large cases built here (mha-b2-s16k fp16, gqa-s32k-k4096 bf16) through that path.
# Everything ends up in $OUT/job4.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
# Ran at commit 34e55fa; later commits changed bench.py's default configurations and Config's
# defaults, so check out 34e55fa to repeat it exactly.
set -u
W=/tmp/job4
END=${END:-470}
source "$(dirname "$0")/_job_lib.sh"
gen_large mha16 gqabf
PICK=(--step1 fma --bs 1024 --select tour)
for s in gold16 goldbf; do
  step "gold_$s" 100 90 $PY examples/gpu_sparq/run_golden.py $G/$s $W/val/out_$s "${PICK[@]}" --tour 2
  check $G/$s $W/val/out_$s ${s}_fma1024_tour2
  rm -rf $W/val/out_$s
done
for hkv in 32 8; do
  step tune_h$hkv 160 60 $PY examples/gpu_sparq/tune.py --out $W/tune_h$hkv.json \
    --B 64 --S 16384 --hkv $hkv --rk "32,128" --selects "topk,tour8" \
    --step1 "fma-bs1024-w2,fma-bs1024-w4,fma-bs2048-w4,fma-bs2048-w8,fma-bs4096-w8,loop-bs1024-w2,dot-bs256-w2,dot-bs256-w4"
done
step bench 260 280 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_run3.json --budget-s 250
if [ "$HAVE_NUMBA" = 1 ]; then
  for s in mha16 gqabf; do
    if [ -f $BIG/$s/manifest.json ]; then
      step big_$s 440 25 $PY examples/gpu_sparq/run_golden.py $BIG/$s $W/val/out_$s "${PICK[@]}" --tour 8
      check $BIG/$s $W/val/out_$s ${s}_fma1024_tour8
      rm -rf $W/val/out_$s
    fi
  done
fi
pack job4
