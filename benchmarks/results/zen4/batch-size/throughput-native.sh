# A first look, without alternation: images/s of the real training loop at batch 32, 64 and 128, 2 threads
# (recorded output beside it, .txt). Superseded by throughput-ab.sh, which alternates batch 32 and 64.
cd "$(dirname "$0")/../../../.."
for r in 1 2; do
for b in 32 64 128; do
  s=$((25600 / b)); [ $s -le 200 ] && s=201
  echo "round $r batch $b" 
  .venv/bin/python benchmarks/bench_train_steps.py --steps $((s>400?s:401)) --set data.batch_size=$b 2>&1 | tail -1
done; done
