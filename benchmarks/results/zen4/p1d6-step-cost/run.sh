#!/bin/bash
# Step cost of ConvMixer-128/6 with patch 1 (and of 128/8 with patch 1, fmnist_p1's model) against the default
# (ConvMixer-128/8 p2): the three alternate, 5 rounds, native (bf16) first, then the fp32 AVX2 path emulated.
# Summarized in summary.json (docs/RESULTS.md, machine D, sixth session).
set -e
cd "$(dirname "$0")/../../../.." && mkdir -p "${OUT:-/tmp/sbd}"
for isa in native avx2; do
 for r in 1 2 3 4 5; do
  for m in "2 8" "1 6" "1 8"; do
   set -- $m
   if [ $isa = avx2 ]; then E="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"; else E=""; fi
   env $E .venv/bin/convmixer bench --model convmixer_fmnist --model-arg patch_size=$1 --model-arg depth=$2 --mode train --in-chans 1 --num-classes 10 --image-size 28 --batch-size 32 --no-memory --latency-repeats 0 --threads 2 --no-progress --no-reference --repeats 20 --json-out ${OUT:-/tmp/sbd}/$isa-p$1d$2-r$r.json > ${OUT:-/tmp/sbd}/$isa-p$1d$2-r$r.log 2>&1
  done
 done
done
OUT="${OUT:-/tmp/sbd}" .venv/bin/python - <<'PY'
import json, os, statistics as st, time
from convmixer.bench.machine import machine
out_dir, here = os.environ["OUT"], "benchmarks/results/zen4/p1d6-step-cost"
load = lambda isa, m, r: json.load(open(f"{out_dir}/{isa}-{m}-r{r}.json"))
summary = {"what": "training step (forward, loss, backward, AdamW) of ConvMixer-128/D k5 at patch P on 1x28x28, batch 32, "
           "2 threads, `convmixer bench --mode train --no-reference`; the three shapes alternate, 5 rounds, each round's "
           "step time the median of 20 steps; ratio = per-round step time over the default's (P2 D8) in the same round, "
           "median over rounds",
           "command": "OUT=/tmp/sbd bash benchmarks/results/zen4/p1d6-step-cost/run.sh (one JSON per run under $OUT)",
           "date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": {}}
for isa, name in (("native", "native (bf16, AVX-512)"), ("avx2", "avx2 (fp32 AVX2 emulated: CONVMIXER_CPU_ISA=avx2 "
                  "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)")):
    base = [load(isa, "p2d8", r)["runs"]["fast"]["step_ms_median"] for r in range(1, 6)]
    res = {}
    for m in ("p2d8", "p1d6", "p1d8"):
        ms = [load(isa, m, r)["runs"]["fast"]["step_ms_median"] for r in range(1, 6)]
        ratio = [a / b for a, b in zip(ms, base)]
        res[m] = {"step_ms_per_round": ms, "step_ms_median": round(st.median(ms), 1),
                  "ratio_to_default_median": round(st.median(ratio), 2),
                  "ratio_range": [round(min(ratio), 2), round(max(ratio), 2)]}
    summary["results"][name] = res
json.dump(summary, open(f"{here}/summary.json", "w"), indent=1)
print(json.dumps({n: {m: r["ratio_to_default_median"] for m, r in res.items()} for n, res in summary["results"].items()}))
PY
