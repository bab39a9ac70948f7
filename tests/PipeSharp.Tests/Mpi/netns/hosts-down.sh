#!/bin/sh
# usage: hosts-down.sh NS...
# Kills every process inside the given network namespaces (mpirun, Hydra's proxies, the ranks: after a cut link they
# are orphans that never end on their own) and deletes the namespaces (with them the veth pair). Never fails.
for ns in "$@"; do
  ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
done
for ns in "$@"; do
  # kill -9 is asynchronous: wait (up to 5 s) until the namespace is empty, then delete it.
  for i in $(seq 50); do [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break; sleep 0.1; done
  ip netns del "$ns" 2>/dev/null
done
exit 0
