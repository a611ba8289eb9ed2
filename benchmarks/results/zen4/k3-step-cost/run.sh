#!/bin/bash
# Step cost of the default model with depthwise kernel 3 instead of 5 (ConvMixer-128/8 p2): the two alternate,
# 5 rounds, native (bf16) first, then the fp32 AVX2 path emulated. Summarized in summary.json (docs/RESULTS.md,
# machine D, sixth session).
set -e
cd "$(dirname "$0")/../../../.." && mkdir -p "${OUT:-/tmp/sbk}"
for isa in native avx2; do
 for r in 1 2 3 4 5; do
  for k in 5 3; do
   if [ $isa = avx2 ]; then E="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"; else E=""; fi
   env $E .venv/bin/convmixer bench --model convmixer_fmnist --model-arg kernel_size=$k --mode train --in-chans 1 --num-classes 10 --image-size 28 --batch-size 32 --no-memory --latency-repeats 0 --threads 2 --no-progress --no-reference --repeats 20 --json-out ${OUT:-/tmp/sbk}/$isa-k$k-r$r.json > ${OUT:-/tmp/sbk}/$isa-k$k-r$r.log 2>&1
  done
 done
done
OUT="${OUT:-/tmp/sbk}" .venv/bin/python - <<'PY'
import json, os, statistics as st, time
from convmixer.bench.machine import machine
out_dir, here = os.environ["OUT"], "benchmarks/results/zen4/k3-step-cost"
load = lambda isa, k, r: json.load(open(f"{out_dir}/{isa}-k{k}-r{r}.json"))
summary = {"what": "training step (forward, loss, backward, AdamW) of ConvMixer-128/8 p2 with depthwise kernel 5 (the "
           "default) and 3, 1x28x28, batch 32, 2 threads, `convmixer bench --mode train --no-reference`; the two "
           "alternate, 5 rounds, each round's step time the median of 20 steps; ratio = per-round k3 step time over the "
           "k5 step time in the same round, median over rounds",
           "command": "OUT=/tmp/sbk bash benchmarks/results/zen4/k3-step-cost/run.sh (one JSON per run under $OUT)",
           "date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": {}}
for isa, name in (("native", "native (bf16, AVX-512)"), ("avx2", "avx2 (fp32 AVX2 emulated: CONVMIXER_CPU_ISA=avx2 "
                  "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)")):
    ms = {k: [load(isa, k, r)["runs"]["fast"]["step_ms_median"] for r in range(1, 6)] for k in (5, 3)}
    ratio = [a / b for a, b in zip(ms[3], ms[5])]
    summary["results"][name] = {f"k{k}": {"step_ms_per_round": v, "step_ms_median": round(st.median(v), 1)}
                                for k, v in ms.items()}
    summary["results"][name]["k3_over_k5"] = {"median": round(st.median(ratio), 3),
                                              "range": [round(min(ratio), 3), round(max(ratio), 3)]}
json.dump(summary, open(f"{here}/summary.json", "w"), indent=1)
print(json.dumps({n: r["k3_over_k5"] for n, r in summary["results"].items()}))
PY
