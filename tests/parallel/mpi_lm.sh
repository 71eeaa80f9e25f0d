#!/usr/bin/env bash
# mpi_lm.sh - `mpirun -np P moe train` (data parallel, experts split over the ranks): the same
# global batch on 1, 2 and 4 ranks gives the same checkpoint (weights, optimiser state, carried
# state) to 1e-5 after several steps, with dropout and gate noise on; a run checkpointed on 2
# ranks resumes on 4 and on 1 and ends where the straight run ends; the factored optimiser too;
# a hierarchical MoE on 2 and 4 ranks;
# and impossible or mismatched settings end every rank with a clear message.
# usage: mpi_lm.sh "MPIRUN AND FLAGS" MOE_BINARY
set -u
read -r -a mpirun <<<"$1"
moe=$2
. "$(dirname "$0")/../testlib.sh"
run() { # run NP ARGS... : moe train under mpirun (NP=1: a plain process)
  local np=$1; shift
  if [[ $np -eq 1 ]]; then "$moe" train "$@"; else timeout 120 "${mpirun[@]}" -np "$np" "$moe" train "$@"; fi
}
same() { # same GOT WANT LABEL
  local out; out=$("$moe" diff --got "$1" --want "$2" --rtol 1e-5 2>&1)
  if [[ $? -eq 0 ]]; then ok; else bad "$3: $(grep OFF <<<"$out" | head -3)"; fi
}
for i in $(seq 1 600); do echo "line $i: the quick brown fox jumps over the lazy dog $((i % 7))."; done > "$tmp/text.txt"
common=(--data "$tmp/text.txt" --batch 4 --bptt 16 --log-every 5 --eval-every 10 --eval-batches 2 --threads 1 --ckpt-every 0)
model=(--d 16 --experts 4 --k 2 --h 16)
run 1 "${common[@]}" "${model[@]}" --steps 20 --out "$tmp/one" > "$tmp/one.log" 2>&1 || bad "1 process: $(tail -2 "$tmp/one.log")"
for np in 2 4; do
  if run $np "${common[@]}" "${model[@]}" --steps 20 --out "$tmp/r$np" > "$tmp/r$np.log" 2>&1; then ok; else bad "$np ranks: $(tail -3 "$tmp/r$np.log")"; fi
  same "$tmp/r$np/model.safetensors" "$tmp/one/model.safetensors" "$np ranks vs 1 process"
  grep -q "ranks: $np processes" "$tmp/r$np.log" && ok || bad "$np ranks: no ranks line"
  [[ $(grep -c "done: checkpoint" "$tmp/r$np.log") -eq 1 ]] && ok || bad "$np ranks: rank 0 alone should print"
done
# checkpointed on 2 ranks, resumed on 4 and on 1
run 2 "${common[@]}" "${model[@]}" --steps 10 --out "$tmp/h" > "$tmp/h.log" 2>&1 || bad "2 ranks, 10 steps: $(tail -2 "$tmp/h.log")"
cp -r "$tmp/h" "$tmp/h4"
run 4 "${common[@]}" --steps 20 --out "$tmp/h4" --resume "$tmp/h4/model.safetensors" > "$tmp/h4.log" 2>&1 || bad "resume on 4: $(tail -2 "$tmp/h4.log")"
same "$tmp/h4/model.safetensors" "$tmp/one/model.safetensors" "2 ranks then 4 vs straight"
run 1 "${common[@]}" --steps 20 --out "$tmp/h" --resume "$tmp/h/model.safetensors" > "$tmp/h1.log" 2>&1 || bad "resume on 1: $(tail -2 "$tmp/h1.log")"
same "$tmp/h/model.safetensors" "$tmp/one/model.safetensors" "2 ranks then 1 process vs straight"
# the factored optimiser, uneven experts per rank (5 experts on 2 ranks)
run 1 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --out "$tmp/f1" > /dev/null 2>&1 || bad "factored, 1 process"
run 2 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --out "$tmp/f2" > "$tmp/f2.log" 2>&1 || bad "factored, 2 ranks: $(tail -2 "$tmp/f2.log")"
same "$tmp/f2/model.safetensors" "$tmp/f1/model.safetensors" "factored optimiser, 5 experts on 2 ranks"
# fused expert updates on 2 ranks (each rank steps its own experts), without clipping: the
# unfused 1-process run; and with the dense FFN (replicated) they are refused
run 2 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --clip 0 --fused --out "$tmp/fu2" > "$tmp/fu2.log" 2>&1 || bad "fused, 2 ranks: $(tail -2 "$tmp/fu2.log")"
run 1 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --clip 0 --out "$tmp/fu1" > /dev/null 2>&1 || bad "clip 0, 1 process"
same "$tmp/fu2/model.safetensors" "$tmp/fu1/model.safetensors" "fused updates on 2 ranks vs unfused in 1 process"
# bfloat16 experts on 2 ranks: each rank rounds its own experts with the bits of their places in
# the whole tensor, so the run is the 1-process run's, gathered into one checkpoint
run 2 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --fused --bf16 --out "$tmp/bf2" > "$tmp/bf2.log" 2>&1 || bad "bf16, 2 ranks: $(tail -2 "$tmp/bf2.log")"
run 1 "${common[@]}" --d 16 --experts 5 --k 2 --h 16 --optim factored --steps 12 --fused --bf16 --out "$tmp/bf1" > /dev/null 2>&1 || bad "bf16, 1 process"
same "$tmp/bf2/model.safetensors" "$tmp/bf1/model.safetensors" "bf16 experts on 2 ranks vs 1 process"
run 2 "${common[@]}" --ffn dense --d 16 --k 2 --h 16 --steps 2 --fused --out "$tmp/fd" > "$tmp/fd.log" 2>&1 && bad "fused dense FFN on 2 ranks ran" || ok
grep -qi "fused updates need the experts split" "$tmp/fd.log" && ok || bad "fused dense FFN on 2 ranks: $(tail -2 "$tmp/fd.log")"
# a hierarchical MoE (2 groups of 4 experts, 1 group x 2 experts a token; 4 ranks split the
# groups) with Adam and with the factored optimiser
hier=(--d 16 --experts 8 --groups 2 --k-groups 1 --k 2 --h 16)
for opt in adam factored; do
  run 1 "${common[@]}" "${hier[@]}" --optim $opt --steps 12 --out "$tmp/g1$opt" > /dev/null 2>&1 || bad "hierarchical $opt, 1 process"
  for np in 2 4; do
    run $np "${common[@]}" "${hier[@]}" --optim $opt --steps 12 --out "$tmp/g$np$opt" > "$tmp/g$np$opt.log" 2>&1 || bad "hierarchical $opt, $np ranks: $(tail -2 "$tmp/g$np$opt.log")"
    same "$tmp/g$np$opt/model.safetensors" "$tmp/g1$opt/model.safetensors" "hierarchical MoE ($opt) on $np ranks"
  done
done
# the dense baseline: its one expert is replicated, its gradients summed like the LSTMs'
run 1 "${common[@]}" --d 16 --ffn dense --k 2 --h 16 --steps 12 --out "$tmp/d1" > /dev/null 2>&1 || bad "dense, 1 process"
run 2 "${common[@]}" --d 16 --ffn dense --k 2 --h 16 --steps 12 --out "$tmp/d2" > "$tmp/d2.log" 2>&1 || bad "dense, 2 ranks: $(tail -2 "$tmp/d2.log")"
same "$tmp/d2/model.safetensors" "$tmp/d1/model.safetensors" "dense FFN on 2 ranks"
# bad settings: every rank ends, with a message, well before the time limit
out=$(run 4 "${common[@]}" --d 16 --experts 2 --k 1 --h 16 --steps 5 --out "$tmp/x" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "each rank needs at least one expert" <<<"$out" && ok || bad "4 ranks, 2 experts: exit $rc: ${out: -300}"
out=$(run 4 --data "$tmp/text.txt" --batch 2 --bptt 16 "${model[@]}" --steps 5 --out "$tmp/x" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "smaller than the 4 ranks" <<<"$out" && ok || bad "batch 2 on 4 ranks: exit $rc: ${out: -300}"
out=$(timeout 120 "${mpirun[@]}" -np 1 "$moe" train "${common[@]}" "${model[@]}" --steps 5 --out "$tmp/y" : \
      -np 1 "$moe" train "${common[@]}" "${model[@]}" --steps 6 --out "$tmp/y" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "ranks disagree on --steps" <<<"$out" && ok || bad "ranks with other --steps: exit $rc: ${out: -300}"
out=$(run 2 "${common[@]}" --d 16 --experts 8 --k 2 --h 16 --steps 30 --out "$tmp/h" --resume "$tmp/h/model.safetensors" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "contradict the checkpoint" <<<"$out" && ok || bad "resume with another expert count on 2 ranks: exit $rc: ${out: -300}"
finish mpi_lm
