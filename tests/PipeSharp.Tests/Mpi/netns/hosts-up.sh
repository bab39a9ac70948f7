#!/bin/sh
# usage: hosts-up.sh NS1 NS2 DEV1 DEV2 NET
# Two "machines" for multi-host MPI tests: network namespaces NS1 and NS2 joined by a veth pair, DEV1 (in NS1, NET.1/24)
# <-> DEV2 (in NS2, NET.2/24), loopback up in both. Needs root. Undo with hosts-down.sh NS1 NS2.
set -e
[ $# -eq 5 ] || { echo "usage: $0 NS1 NS2 DEV1 DEV2 NET (e.g. ps-t1 ps-t2 pst1 pst2 10.200.7)" >&2; exit 2; }
NS1=$1; NS2=$2; DEV1=$3; DEV2=$4; NET=$5
ip netns add "$NS1"
ip netns add "$NS2"
ip link add "$DEV1" netns "$NS1" type veth peer name "$DEV2" netns "$NS2"
ip -n "$NS1" addr add "$NET.1/24" dev "$DEV1"
ip -n "$NS2" addr add "$NET.2/24" dev "$DEV2"
for ns in "$NS1" "$NS2"; do ip -n "$ns" link set lo up; done
ip -n "$NS1" link set "$DEV1" up
ip -n "$NS2" link set "$DEV2" up
# The kernel reports the carrier a moment later (link watch); until then MPI's UCX skips the device (and then finds no
# way to the other host). Wait for it, up to 5 s.
for i in $(seq 50); do
  ip -n "$NS1" -o link show "$DEV1" | grep -q 'state UP' && ip -n "$NS2" -o link show "$DEV2" | grep -q 'state UP' && exit 0
  sleep 0.1
done
echo "$0: the veth pair $DEV1/$DEV2 did not come up within 5 s" >&2
exit 1
