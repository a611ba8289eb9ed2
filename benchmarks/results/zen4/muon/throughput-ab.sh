# Two settings of the default recipe side by side in the real training loop (benchmarks/bench_train_steps.py:
# augmentation, forward, loss, backward, clipping, the optimizer, EMA), 2 threads (THREADS=1 for one), 402 steps a
# run (two 200-step windows), alternated ROUNDS times per path so that both see the same machine.
# By default A = AdamW for every weight, B = Muon (optim.muon=true, fp32 Newton-Schulz on the CPU); output of
# 2026-12-06: throughput-ab.txt. Other pairs: A="optim.muon=true" B="optim.muon=true optim.muon_all_convs=true"
# (output: throughput-ab-allconvs.txt); A="optim.muon=true" B="data.batch_size=32 model.patch_size=1", the default
# against the step of configs/fmnist_p1.yaml with Muon (output: ../p1-step-cost/throughput-ab-p1muon.txt).
# Usage: bash benchmarks/results/zen4/muon/throughput-ab.sh > OUT.txt   (ROUNDS=3 by default)
cd "$(dirname "$0")/../../../.."
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
A=${A:-optim.muon=false}
B=${B:-optim.muon=true}
for path in native avx2; do
  for round in $(seq 1 "${ROUNDS:-3}"); do
    for setting in "$A" "$B"; do
      env=""; [ $path = avx2 ] && env=$AVX2
      echo "path $path round $round $setting"
      env $env .venv/bin/python benchmarks/bench_train_steps.py --steps 402 --threads "${THREADS:-2}" \
        --set $setting | tail -1
    done
  done
done
