cd /work/main
export CONVMIXER_CPU_ISA=avx2 ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2
for b in 32 128 64 32 128; do
  echo "batch $b" 
  .venv/bin/python benchmarks/bench_train_steps.py --steps 401 --set data.batch_size=$b 2>&1 | tail -1
done
