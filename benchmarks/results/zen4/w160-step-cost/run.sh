#!/bin/bash
# Step cost of the default model 160 wide instead of 128 (ConvMixer-160/8 k5 p2): the two alternate,
# 5 rounds, native (bf16) first, then the fp32 AVX2 path emulated. Summarized in summary.json (docs/RESULTS.md,
# machine D, sixth session).
set -e
cd "$(dirname "$0")/../../../.." && mkdir -p "${OUT:-/tmp/sbw}"
for isa in native avx2; do
 for r in 1 2 3 4 5; do
  for k in 128 160; do
   if [ $isa = avx2 ]; then E="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"; else E=""; fi
   env $E .venv/bin/convmixer bench --model convmixer_fmnist --model-arg dim=$k --mode train --in-chans 1 --num-classes 10 --image-size 28 --batch-size 32 --no-memory --latency-repeats 0 --threads 2 --no-progress --no-reference --repeats 20 --json-out ${OUT:-/tmp/sbw}/$isa-w$k-r$r.json > ${OUT:-/tmp/sbw}/$isa-w$k-r$r.log 2>&1
  done
 done
done
OUT="${OUT:-/tmp/sbw}" .venv/bin/python - <<'PY'
import json, os, statistics as st, time
from convmixer.bench.machine import machine
out_dir, here = os.environ["OUT"], "benchmarks/results/zen4/w160-step-cost"
load = lambda isa, k, r: json.load(open(f"{out_dir}/{isa}-w{k}-r{r}.json"))
summary = {"what": "training step (forward, loss, backward, AdamW) of ConvMixer-W/8 k5 p2 with W = 128 (the "
           "default) and 160, 1x28x28, batch 32, 2 threads, `convmixer bench --mode train --no-reference`; the two "
           "alternate, 5 rounds, each round's step time the median of 20 steps; ratio = per-round W160 step time over the "
           "W128 step time in the same round, median over rounds",
           "command": "OUT=/tmp/sbw bash benchmarks/results/zen4/w160-step-cost/run.sh (one JSON per run under $OUT)",
           "date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": {}}
for isa, name in (("native", "native (bf16, AVX-512)"), ("avx2", "avx2 (fp32 AVX2 emulated: CONVMIXER_CPU_ISA=avx2 "
                  "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)")):
    ms = {k: [load(isa, k, r)["runs"]["fast"]["step_ms_median"] for r in range(1, 6)] for k in (128, 160)}
    ratio = [a / b for a, b in zip(ms[160], ms[128])]
    summary["results"][name] = {f"w{k}": {"step_ms_per_round": v, "step_ms_median": round(st.median(v), 1)}
                                for k, v in ms.items()}
    summary["results"][name]["w160_over_w128"] = {"median": round(st.median(ratio), 3),
                                              "range": [round(min(ratio), 3), round(max(ratio), 3)]}
json.dump(summary, open(f"{here}/summary.json", "w"), indent=1)
print(json.dumps({n: r["w160_over_w128"] for n, r in summary["results"].items()}))
PY
