#!/usr/bin/env bash
# mpi_s2s.sh - `mpirun -np P moe seq2seq train` (each rank runs its rows of every batch, the MoE
# layers' experts split over the ranks): MIXER and SCST over their whole schedules (cross-entropy,
# then stages that sample, with rewards and baselines) on 2 and 4 ranks give the one-process
# checkpoint (weights and optimiser state) to 1e-5, batches smaller than the ranks included (a
# rank with no rows still takes part); a run checkpointed mid-stage on 2 ranks resumes on 4 and
# on 1 and ends where the straight run ends; without MoE too; settings that differ between the
# ranks or more ranks than experts end every rank with a clear message.
# usage: mpi_s2s.sh "MPIRUN AND FLAGS" MOE_BINARY
set -u
read -r -a mpirun <<<"$1"
moe=$2
. "$(dirname "$0")/../testlib.sh"
run() { # run NP ARGS... : moe seq2seq train under mpirun (NP=1: a plain process)
  local np=$1; shift
  if [[ $np -eq 1 ]]; then "$moe" seq2seq train "$@"; else timeout 120 "${mpirun[@]}" -np "$np" "$moe" seq2seq train "$@"; fi
}
same() { # same GOT WANT LABEL
  local out; out=$("$moe" diff --got "$1" --want "$2" --rtol 1e-5 2>&1)
  if [[ $? -eq 0 ]]; then ok; else bad "$3: $(grep OFF <<<"$out" | head -3)"; fi
}
parallel_text "$tmp"
data=(--src "$tmp/de.txt" --tgt "$tmp/en.txt" --max-words 6 --min-count 1 --batch 16 --threads 1 --log-every 10)
sched=(--n-xent 1 --n-xer 1 --delta 3)   # T = 7: stages s = 7, 4, 0 after one epoch of cross-entropy
model=(--d 16 --experts 4 --k 2 --h 16)
for obj in mixer scst; do
  run 1 "${data[@]}" "${sched[@]}" "${model[@]}" --objective $obj --out "$tmp/one$obj" > "$tmp/one$obj.log" 2>&1 || bad "$obj, 1 process: $(tail -2 "$tmp/one$obj.log")"
  grep -q '"reward":0\.[0-9]' "$tmp/one$obj/log.jsonl" && ok || bad "$obj: the run never sampled (no reward in the log)"
  for np in 2 4; do
    if run $np "${data[@]}" "${sched[@]}" "${model[@]}" --objective $obj --out "$tmp/r$np$obj" > "$tmp/r$np$obj.log" 2>&1; then ok; else bad "$obj on $np ranks: $(tail -c 600 "$tmp/r$np$obj.log")"; fi
    same "$tmp/r$np$obj/model.safetensors" "$tmp/one$obj/model.safetensors" "$obj on $np ranks vs 1 process"
    grep -q "ranks: $np processes" "$tmp/r$np$obj.log" && ok || bad "$obj on $np ranks: no ranks line"
    [[ $(grep -c "done: checkpoint" "$tmp/r$np$obj.log") -eq 1 ]] && ok || bad "$obj on $np ranks: rank 0 alone should print"
    [[ $(grep -c '"kind":"epoch"' "$tmp/r$np$obj/log.jsonl") -eq 4 ]] && ok || bad "$obj on $np ranks: the log should have 4 epochs, once"
  done
done
# checkpointed on 2 ranks inside the stage s = 4, resumed on 4 and on 1
run 2 "${data[@]}" "${sched[@]}" "${model[@]}" --objective mixer --steps 100 --out "$tmp/h" > "$tmp/h.log" 2>&1 || bad "2 ranks, 100 steps: $(tail -2 "$tmp/h.log")"
cp -r "$tmp/h" "$tmp/h4"
run 4 "${data[@]}" "${sched[@]}" --objective mixer --out "$tmp/h4" --resume "$tmp/h4/model.safetensors" > "$tmp/h4.log" 2>&1 || bad "resume on 4: $(tail -2 "$tmp/h4.log")"
same "$tmp/h4/model.safetensors" "$tmp/onemixer/model.safetensors" "2 ranks then 4 vs straight"
run 1 "${data[@]}" "${sched[@]}" --objective mixer --out "$tmp/h" --resume "$tmp/h/model.safetensors" > "$tmp/h1.log" 2>&1 || bad "resume on 1: $(tail -2 "$tmp/h1.log")"
same "$tmp/h/model.safetensors" "$tmp/onemixer/model.safetensors" "2 ranks then 1 process vs straight"
# no MoE: plain data parallelism, every gradient summed over the ranks
run 1 "${data[@]}" --moe 0 --d 16 --epochs 2 --out "$tmp/d1" > /dev/null 2>&1 || bad "no MoE, 1 process"
run 2 "${data[@]}" --moe 0 --d 16 --epochs 2 --out "$tmp/d2" > "$tmp/d2.log" 2>&1 || bad "no MoE, 2 ranks: $(tail -2 "$tmp/d2.log")"
same "$tmp/d2/model.safetensors" "$tmp/d1/model.safetensors" "no MoE on 2 ranks"
# bad settings: every rank ends, with a message, well before the time limit
out=$(run 4 "${data[@]}" --d 16 --experts 2 --k 1 --h 16 --steps 3 --out "$tmp/x" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "each rank needs at least one expert" <<<"$out" && ok || bad "4 ranks, 2 experts: exit $rc: ${out: -300}"
out=$(timeout 120 "${mpirun[@]}" -np 1 "$moe" seq2seq train "${data[@]}" "${model[@]}" --steps 5 --out "$tmp/y" : \
      -np 1 "$moe" seq2seq train "${data[@]}" "${model[@]}" --steps 6 --out "$tmp/y" 2>&1); rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] && grep -q "ranks disagree on --steps" <<<"$out" && ok || bad "ranks with other --steps: exit $rc: ${out: -300}"
finish mpi_s2s
