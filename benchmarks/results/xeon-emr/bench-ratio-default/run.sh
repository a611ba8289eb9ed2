#!/bin/bash
# `convmixer bench --mode train` (the fast path against the plain reference in the same process) for the default
# model (convmixer_128_6_ks5_p1, since 2026-12-07) and the previous one (convmixer_fmnist), alternating, AVX2 fp32
# emulated and native, 28 px, batch 32 (the recipes' batch), 2 threads, 2 rounds. Run from the repository root:
#   OUT=/tmp/brd bash benchmarks/results/xeon-emr/bench-ratio-default/run.sh
set -e
OUT=${OUT:-/tmp/brd}; mkdir -p $OUT
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for round in 1 2; do
  for isa in avx2 native; do
    envs=""; [ $isa = avx2 ] && envs="$AVX2"
    for model in convmixer_fmnist convmixer_128_6_ks5_p1; do
      env $envs .venv/bin/convmixer bench --model $model --mode train --image-size 28 --batch-size 32 --threads 2 \
        --repeats 10 --no-memory --no-progress --json-out $OUT/$isa-$model-r$round.json > /dev/null 2>&1
    done
  done
done
.venv/bin/python - "$OUT" <<'PY'
import json, pathlib, statistics, sys
out = pathlib.Path(sys.argv[1])
for isa in ("avx2", "native"):
    for model in ("convmixer_fmnist", "convmixer_128_6_ks5_p1"):
        runs = [json.loads(p.read_text()) for p in sorted(out.glob(f"{isa}-{model}-r*.json"))]
        fast = [r["runs"]["fast"]["step_ms_median"] for r in runs]
        ref = [r["runs"]["reference"]["step_ms_median"] for r in runs]
        ratios = " ".join(f"{r['ratio']:.2f}x" for r in runs)
        print(f"{isa:6} {model:24} fast step {statistics.mean(fast):7.1f} ms  reference {statistics.mean(ref):7.1f} ms  "
              f"ratio {ratios}  ({runs[0]['plan']})")
PY
