# Batch 32 against batch 64 (the real training loop, benchmarks/bench_train_steps.py, 2 threads, 25,600 images a
# run), alternated 3 times per path so that both see the same machine; medians of 200-step windows.
# Usage: bash benchmarks/results/zen4/batch-size/throughput-ab.sh > OUT.txt   (output of 2026-12-06: throughput-ab.txt)
cd "$(dirname "$0")/../../../.."
AVX2="CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2"
for path in native avx2; do
  for round in 1 2 3; do
    for b in 32 64; do
      env=""; [ $path = avx2 ] && env=$AVX2
      echo "path $path round $round batch $b"
      env $env .venv/bin/python benchmarks/bench_train_steps.py --steps $((25600 / b + 1)) \
        --set data.batch_size=$b optim.lr=$([ $b = 32 ] && echo 0.003 || echo 0.004) | tail -1
    done
  done
done
