# A first look, without alternation: images/s of the real training loop at batch 32, 64 and 128, 2 threads
# (recorded output beside it, .txt). Superseded by throughput-ab.sh, which alternates batch 32 and 64.
cd "$(dirname "$0")/../../../.."
export CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
for b in 32 128 64 32 128; do
  echo "batch $b" 
  .venv/bin/python benchmarks/bench_train_steps.py --steps 401 --set data.batch_size=$b 2>&1 | tail -1
done
