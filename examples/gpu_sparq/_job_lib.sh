# Shared set-up of the GPU job scripts (gpu_job3.sh ... gpu_job7.sh), sourced after they set
#   W    the work directory (packed into $OUT/<name>.tgz at the end)
#   END  seconds after which no step runs (each step's timeout is cut to fit)
# Provides PY, G (the golden suites), BIG (large cases built here), HAVE_NUMBA, and
#   say MSG...                                  log with the elapsed seconds
#   step NAME LATEST_START TIMEOUT CMD...       run CMD unless past LATEST_START; log in $W/NAME.log
#   check SUITE_DIR OUTPUTS_DIR NAME            `sparq check --json` into $W/val/check_NAME.json
#   gen_large mha16|gqabf...                    build the large validation cases in the background
#   pack NAME                                   tar $W into $OUT/NAME.tgz
OUT=${OUT:-results}
mkdir -p "$W/val"
export PYTHONPATH=. PYTHONUNBUFFERED=1
PY=$(command -v python3 || command -v python)
G=examples/gpu_sparq/_gold
BIG=/tmp/big
LOG=$W/job.log
say() { echo "[$SECONDS s] $*" | tee -a "$LOG"; }
left() { local t=$((END - SECONDS)); [ "$1" -lt "$t" ] && t=$1; [ "$t" -lt 1 ] && t=1; echo $t; }
step() {
  local name=$1 late=$2 to; to=$(left "$3"); shift 3
  if [ "$SECONDS" -gt "$late" ]; then say "SKIP $name (elapsed past $late s)"; return 0; fi
  say "START $name"
  timeout "$to" "$@" > "$W/$name.log" 2>&1
  say "END $name rc=$?"
}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  $PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
  command -v ncu > /dev/null && ncu --version
} > "$W/env.txt" 2>&1
if $PY -c "import numba, scipy, numpy" 2>/dev/null; then HAVE_NUMBA=1; else HAVE_NUMBA=0; fi
echo "numba: $HAVE_NUMBA" >> "$W/env.txt"
check() {
  [ "$HAVE_NUMBA" = 1 ] && timeout "$(left 60)" $PY -m sparq_cli check "$1" "$2" --json \
    > "$W/val/check_$3.json" 2> "$W/val/check_$3.err"
}
gen_large() {
  [ "$HAVE_NUMBA" = 1 ] || return 0
  (
    for c in "$@"; do
      case $c in
        mha16) $PY -m sparq_cli golden --out $BIG/mha16 --dtype float16 --shape 2,32,32,16384,128 \
                 --name mha-b2-s16k --r 32 --k 128 --local-window 32 --holes ;;
        gqabf) $PY -m sparq_cli golden --out $BIG/gqabf --dtype bfloat16 --shape 1,32,8,32768,128 \
                 --name gqa-s32k-k4096 --r 16 --k 4096 --local-window 64 --holes ;;
      esac > "$W/val/gen_$c.log" 2>&1
    done
  ) &
}
pack() {
  say "packing"
  mkdir -p "$OUT"
  tar czf "$OUT/$1.tgz" -C "$W" . 2>/dev/null
  ls -la "$OUT"; cat "$LOG"
}
