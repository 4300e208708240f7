# The three base train stages side by side (parallel_repro --jobs 3), eager and then compiled, on one
# machine. Run from the repository root of a throw-away copy, on a GPU host, with OUT set:
#   OUT=/tmp/out bash scripts/gpu/compile_vs_eager.sh
set -u
KEEP_RUNS="u_base g_base ug_base" LIMIT_S=1 OUT=/tmp/p bash scripts/gpu/pipeline.sh > /dev/null 2>&1
t=$SECONDS; python -m uvlm.pipeline.repro --jobs 3 tokenizer 2>&1 | grep -E "done|FAILED"; echo "data+tokenizer $((SECONDS-t)) s"
for mode in eager compiled; do
  [ $mode = compiled ] && sed -i 's/^  compile: null/  compile: true/' params.yaml
  t=$SECONDS
  python -m uvlm.pipeline.repro --jobs 3 train@u_base train@g_base train@ug_base 2>&1 | grep -E "\] (start|done|FAILED)"
  echo "$mode: three train stages side by side $((SECONDS-t)) s"
  for r in u_base g_base ug_base; do python -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[2], 'mean step', round(1e3*d['mean_step_time_s'],1), 'ms, train', round(d['train_time_s'],1), 's, setup', round(d['setup_s_this_call'],1), 's')" data/runs/$r/seed0/train_summary.json $r; done
  mkdir -p $OUT/$mode && cp notebooks/executed/logs/train@*.log $OUT/$mode/
done
