#!/usr/bin/env bash
# Second GPU session (after commit 4c3ada6, the combine-kernel fix), one command of ~7 min:
#   OUT=results bash examples/gpu_sparq/gpu_job2.sh
# 1. fp16 golden suite through the kernels (tl.dot + radix), the GQA S=64k benchmark points,
#    the bf16 GQA S=32k case (built here with numba), gold16 with FMA + topk, B=64 S=16k
#    re-measured, bf16 golden suite, mha-b2-s16k; each step gated on the elapsed time.
# 2. Nsight Compute (full set) of step 1 and torch.topk at B=64, S=16k, r=32, k=128, MHA and GQA.
# Everything ends up in $OUT/job2.tgz. Needs examples/gpu_sparq/_gold/{gold16,goldbf} (see
# docs/gpu.md, Rerun).
# Written for commit 4c3ada6: later commits changed the defaults of run_golden.py and bench.py
# (now the FMA step 1 over 2048 positions and the tournament); check out 4c3ada6 to repeat it.
set -u
W=/tmp/job2
END=${END:-490}  # every step is cut at this many seconds, leaving time to pack
source "$(dirname "$0")/_job_lib.sh"
mkdir -p "$W/ncu"
gen_large gqabf mha16
# 1a. fp16 golden suite, default kernels (tl.dot step 1, radix select)
step run_gold16 60 120 $PY examples/gpu_sparq/run_golden.py $G/gold16 $W/val/out_gold16
check $G/gold16 $W/val/out_gold16 gold16
# 1b. the GQA S=64k points that failed to compile before the fix
step bench_gqa64k 200 170 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_gqa64k.json \
  --seqs 65536 --hkv 8 --budget-s 120
# 2. Nsight Compute: step 1 + torch.topk, B=64 S=16k r=32 k=128
NCU=(ncu --set full --clock-control none
     --kernel-name 'regex:_step1_kernel|[Tt]op[Kk]|Kth|Blockwise|[Ss]ort|Digit'
     --launch-count 12 -f)
step ncu_mha 330 110 "${NCU[@]}" -o $W/ncu/ncu_mha $PY examples/gpu_sparq/ncu_driver.py --hkv 32 --fma
step ncu_gqa 380 90 "${NCU[@]}" -o $W/ncu/ncu_gqa $PY examples/gpu_sparq/ncu_driver.py --hkv 8
for c in mha gqa; do
  if [ -f $W/ncu/ncu_$c.ncu-rep ]; then
    ncu --import $W/ncu/ncu_$c.ncu-rep --page details > $W/ncu/ncu_${c}_details.txt 2>&1
    ncu --import $W/ncu/ncu_$c.ncu-rep --print-summary per-kernel > $W/ncu/ncu_${c}_summary.txt 2>&1
    ncu --import $W/ncu/ncu_$c.ncu-rep --page raw --csv > $W/ncu/ncu_${c}_raw.csv 2>&1
  fi
done
say "ncu exports done"
# 1c. bf16 GQA S=32k, r=16, k=4096 (the validation case that failed to compile)
if [ "$HAVE_NUMBA" = 1 ] && [ "$SECONDS" -lt 420 ]; then
  timeout 45 bash -c "while [ ! -f $BIG/gqabf/manifest.json ]; do sleep 2; done"
  step run_gqabf 420 60 $PY examples/gpu_sparq/run_golden.py $BIG/gqabf $W/val/out_gqabf
  check $BIG/gqabf $W/val/out_gqabf gqabf
fi
# 1d. fp16 golden suite with the FMA step 1 + torch.topk (the benchmark's MHA pick)
step run_gold16_fma 440 50 $PY examples/gpu_sparq/run_golden.py $G/gold16 $W/val/out_gold16_fma \
  --fma --select topk
check $G/gold16 $W/val/out_gold16_fma gold16_fma
# 1e. the headline point re-measured with the fix (B=64, S=16k, MHA and GQA)
step bench_b64_s16k 445 60 $PY examples/gpu_sparq/bench.py --out $W/gpu_bench_b64_s16k.json \
  --seqs 16384 --batches 64 --budget-s 40
# 1f. bf16 golden suite
step run_goldbf 470 40 $PY examples/gpu_sparq/run_golden.py $G/goldbf $W/val/out_goldbf
check $G/goldbf $W/val/out_goldbf goldbf
# 1g. mha-b2-s16k, only if time is left
if [ "$HAVE_NUMBA" = 1 ] && [ -f $BIG/mha16/manifest.json ]; then
  step run_mha16 480 25 $PY examples/gpu_sparq/run_golden.py $BIG/mha16 $W/val/out_mha16
  check $BIG/mha16 $W/val/out_mha16 mha16
fi
rm -rf $W/val/out_mha16
say "packing"
mkdir -p "$OUT"
tar czf "$OUT/job2.tgz" -C "$W" . 2>/dev/null
if [ "$(stat -c %s "$OUT/job2.tgz")" -gt 15000000 ]; then  # drop the binary reports, then outputs
  tar czf "$OUT/job2.tgz" -C "$W" --exclude='*.ncu-rep' . 2>/dev/null
fi
if [ "$(stat -c %s "$OUT/job2.tgz")" -gt 15000000 ]; then
  tar czf "$OUT/job2.tgz" -C "$W" --exclude='*.ncu-rep' --exclude='*_raw.csv' --exclude='out_gqabf' . 2>/dev/null
fi
ls -la "$OUT" $W/ncu; cat "$LOG"
