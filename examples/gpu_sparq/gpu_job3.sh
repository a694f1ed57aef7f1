#!/usr/bin/env bash
# Third GPU session, part 1 (the row-loop step 1 and the tournament selection), ~8 minutes:
#   OUT=results bash examples/gpu_sparq/gpu_job3.sh
# 1. the golden suites through the new paths (fp16 and bf16), checked with `sparq check`;
# 2. tune.py at B=64, S=16k (MHA and GQA; r=32 k=128 and r=16 k=S/8): every step-1 variant
#    alone, then every selection with the fastest step 1;
# 3. bench.py at B=64, S=16k and S=64k with the candidate configurations;
# 4. a large validation case (mha-b2-s16k, built here) through the tuned path.
# Everything ends up in $OUT/job3.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf}.
# Ran at commit 092bdbc; later commits changed bench.py's default configurations and Config's
# defaults, so check out 092bdbc to repeat it exactly.
set -u
W=/tmp/job3
END=${END:-500}
source "$(dirname "$0")/_job_lib.sh"
gen_large mha16
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
pack job3
