# The default recipe with Muon (optim.muon=true, fp32 Newton-Schulz on the CPU) against the same recipe with AdamW
# for every weight, in the real training loop (benchmarks/bench_train_steps.py: augmentation, forward, loss,
# backward, clipping, the optimizer, EMA), 2 threads (THREADS=1 for one), 402 steps a run (two 200-step windows),
# alternated ROUNDS times per path so that both see the same machine. Output of 2026-12-06: throughput-ab.txt
# Usage: bash benchmarks/results/zen4/muon/throughput-ab.sh > OUT.txt   (ROUNDS=3 by default)
cd "$(dirname "$0")/../../../.."
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for path in native avx2; do
  for round in $(seq 1 "${ROUNDS:-3}"); do
    for muon in false true; do
      env=""; [ $path = avx2 ] && env=$AVX2
      echo "path $path round $round optim.muon=$muon"
      env $env .venv/bin/python benchmarks/bench_train_steps.py --steps 402 --threads "${THREADS:-2}" \
        --set optim.muon=$muon | tail -1
    done
  done
done
