#!/bin/bash
# Step cost of the patch-1 shapes against the default (ConvMixer-128/8 p2): the four shapes alternate, 5 rounds,
# native (bf16) first, then the fp32 AVX2 path emulated. Summarized in summary.json (docs/RESULTS.md, machine D).
set -e
cd "$(dirname "$0")/../../../.." && mkdir -p "${OUT:-/tmp/sb}"
for isa in native avx2; do
 for r in 1 2 3 4 5; do
  for m in "128 2" "128 1" "160 1" "192 1"; do
   set -- $m
   if [ $isa = avx2 ]; then E="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"; else E=""; fi
   env $E .venv/bin/convmixer bench --model convmixer_fmnist --model-arg dim=$1 --model-arg patch_size=$2 --mode train --in-chans 1 --num-classes 10 --image-size 28 --batch-size 32 --no-memory --latency-repeats 0 --threads 2 --no-progress --no-reference --repeats 20 --json-out ${OUT:-/tmp/sb}/$isa-w$1p$2-r$r.json > ${OUT:-/tmp/sb}/$isa-w$1p$2-r$r.log 2>&1
  done
 done
done
# summary.json: per shape, the per-round medians and the median over rounds of (step / the default's step that round)
OUT="${OUT:-/tmp/sb}" .venv/bin/python - <<'PY'
import json, os, statistics as st, time
from convmixer.bench.machine import machine
out_dir, here = os.environ["OUT"], "benchmarks/results/zen4/p1-step-cost"
load = lambda isa, m, r: json.load(open(f"{out_dir}/{isa}-{m}-r{r}.json"))
summary = {"what": "training step (forward, loss, backward, AdamW) of ConvMixer-W/8 k5 at patch P on 1x28x28, batch 32, "
           "2 threads, `convmixer bench --mode train --no-reference`; the four shapes alternate, 5 rounds, each round's step "
           "time is the median of 20 steps; ratio = per-round step time over the default's (W128 P2) in the same round, "
           "median over rounds",
           "command": "OUT=/tmp/sb bash benchmarks/results/zen4/p1-step-cost/run.sh (one JSON per run under $OUT)",
           "date": time.strftime("%Y-%m-%d"), "machine": machine(), "results": {}}
for isa, name in (("native", "native (bf16, AVX-512)"), ("avx2", "avx2 (fp32 AVX2 emulated: CONVMIXER_CPU_ISA=avx2 "
                  "ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2)")):
    base = [load(isa, "w128p2", r)["runs"]["fast"]["step_ms_median"] for r in range(1, 6)]
    res = {}
    for m in ("w128p2", "w128p1", "w160p1", "w192p1"):
        runs = [load(isa, m, r) for r in range(1, 6)]
        ms = [j["runs"]["fast"]["step_ms_median"] for j in runs]
        ratio = [a / b for a, b in zip(ms, base)]
        res[m] = {"step_ms_per_round": ms, "step_ms_median": round(st.median(ms), 1),
                  "images_per_s": round(32000 / st.median(ms), 1), "ratio_to_default_median": round(st.median(ratio), 2),
                  "ratio_range": [round(min(ratio), 2), round(max(ratio), 2)], "plan": runs[0]["plan"]}
    summary["results"][name] = res
json.dump(summary, open(f"{here}/summary.json", "w"), indent=1)
print(json.dumps({n: {m: r["ratio_to_default_median"] for m, r in res.items()} for n, res in summary["results"].items()}))
PY
