#!/usr/bin/env bash
# Third GPU session, part 4 (final: the defaults of kernels.Config, i.e. three pipeline stages in
# the gathered attention again), ~5 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job6.sh
# 1. the golden suites (fp16, bf16) through the defaults, and with runs of 2 so that the small
#    cases take the tournament; checked;
# 2. bench.py, every point, fp16 then bf16 (bench.DEFAULT_CONFIGS; bf16: the first three);
# 3. two large cases built here (mha-b2-s16k fp16, gqa-s32k-k4096 bf16) through the defaults.
# Everything ends up in $OUT/job6.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
# Ran at commit 097ca48; later commits changed bench.py's default configurations and Config's
# defaults, so check out 097ca48 to repeat it exactly.
set -u
W=/tmp/job6
END=${END:-500}
source "$(dirname "$0")/_job_lib.sh"
gen_large mha16 gqabf
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
pack job6
