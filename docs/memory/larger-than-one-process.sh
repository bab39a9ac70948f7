#!/bin/sh
# A GPT larger than one process's memory cap (a cgroup v1 memory limit the kernel enforces), trained on 2 and 4 MPI
# ranks under the same cap each; see docs/memory.md, "A model larger than one process". Run as root from the repository,
# after `dotnet build -c Release`. Settings by environment: CAP (bytes), OVERHEAD (the CLI's own memory), STEPS, MODEL.
set -u
CAP=${CAP:-2000000000}
OVERHEAD=${OVERHEAD:-170000000}
STEPS=${STEPS:-20}
MODEL=${MODEL:---width 1024 --layers 12 --heads 16 --context 16 --batch-size 4 --microbatches 4}
OUT=${OUT:-$(pwd)/larger-than-one-process}
CG=/sys/fs/cgroup/memory
CLI=$(cd "$(dirname "$0")/../../src/PipeSharp.Cli/bin/Release/net10.0" && pwd)/PipeSharp.Cli.dll
ARGS="train --model gpt $MODEL --sample 0 --eval-every 0 --eval-batches 1 --steps $STEPS"
mkdir -p "$OUT"

group() { mkdir -p $CG/$1; echo $CAP > $CG/$1/memory.limit_in_bytes
  [ -f $CG/$1/memory.memsw.limit_in_bytes ] && echo $CAP > $CG/$1/memory.memsw.limit_in_bytes; true; }
report() { # name exit seconds groups...
  name=$1 code=$2 secs=$3; shift 3
  for g in "$@"; do
    echo "$name: exit $code, $secs s, group $g peak $(cat $CG/$g/memory.max_usage_in_bytes) bytes, $(grep oom_kill $CG/$g/memory.oom_control)"
    rmdir $CG/$g; done; }
now() { date +%s; }

echo "cap $CAP bytes per process; budget $((CAP - OVERHEAD)) bytes; model: $MODEL; $STEPS steps"

# 1. One process, uncapped: the reference trajectory.
t=$(now); /usr/bin/time -f "single uncapped: peak RSS %M KB" dotnet "$CLI" $ARGS --ranks 1 --log "$OUT/single.csv" > "$OUT/single.txt" 2>&1
echo "single uncapped: exit $?, $(( $(now) - t )) s; $(tail -1 "$OUT/single.txt")"

# 2. One process under the cap with the budget: refused before its stages are built.
group lp-refused; t=$(now)
sh -c "echo \$\$ > $CG/lp-refused/cgroup.procs && exec dotnet $CLI $ARGS --ranks 1 --memory-per-device $((CAP - OVERHEAD))" > "$OUT/refused.txt" 2>&1
report "single capped, budget" $? $(( $(now) - t )) lp-refused; grep -m1 "error" "$OUT/refused.txt"

# 3. One process under the cap without a budget: killed by the kernel.
group lp-killed; t=$(now)
sh -c "echo \$\$ > $CG/lp-killed/cgroup.procs && exec dotnet $CLI $ARGS --ranks 1" > "$OUT/killed.txt" 2>&1
report "single capped, no budget" $? $(( $(now) - t )) lp-killed

# 4. 2 and 4 MPI ranks, each process under its own cap, with the budget.
for n in 2 4; do
  r=0; gs=""; while [ $r -lt $n ]; do group lp-$n-$r; gs="$gs lp-$n-$r"; r=$((r + 1)); done
  t=$(now)
  mpirun.mpich -np $n sh -c "echo \$\$ > $CG/lp-$n-\$PMI_RANK/cgroup.procs && exec dotnet $CLI $ARGS --ranks $n --memory-per-device $((CAP - OVERHEAD)) --log $OUT/ranks$n.csv" > "$OUT/ranks$n.txt" 2>&1
  report "$n ranks capped" $? $(( $(now) - t )) $gs; grep "memory:" "$OUT/ranks$n.txt" | head -1
done

# The trajectories: the largest difference of the training loss from the single process, over the steps.
for n in 2 4; do
  [ -f "$OUT/ranks$n.csv" ] && paste -d, "$OUT/single.csv" "$OUT/ranks$n.csv" | awk -F, -v n=$n 'NR > 1 { d = $2 - $7; if (d < 0) d = -d; if (d > m) m = d; k++ }
    END { printf "%d ranks: %d steps, largest |loss difference| from one process %.3g\n", n, k, m }'
done
