#!/usr/bin/env bash
# The kernel counter's own cost per packet at tc ingress, by BPF_PROG_TEST_RUN
# (`bpftool prog run ... repeat N`): no traffic, no scheduler, no other
# receiver in the measurement, so builds of the counter can be compared to a
# few percent on a noisy machine. Each binary given starts one receiver
# (`recv --counter kernel --xdp-mode tc`) in a lab namespace of its own; the
# tc program of each is run on two packets, ROUNDS times in turn, and the
# table gives the smallest average of each (ns a packet) and its ratio to
# the first binary's.
#
#   sudo benches/scripts/counter-cost.sh OLD/mcblast NEW/mcblast [ROUNDS]
#
# Packets (built here, to 239.0.0.1:5001 from 10.77.0.1, as the lab's
# sender's): one mcblast datagram of 1400 B, and coalesced packets of
# three 1000 B and of seven 400 B datagrams (GRO/GSO shapes, linear as test runs
# make them).
# After the first run each is a duplicate for the counter, so this measures
# the parse, the flow lookup and the lock, not the histograms.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 MCBLAST... [ROUNDS]" >&2; exit 2; }
rounds=6
bins=()
for a in "$@"; do if [[ $a =~ ^[0-9]+$ ]]; then rounds=$a; else bins+=("$a"); fi; done
work=$(mktemp -d)
export MCBLAST_LAB_PREFIX="mcbc$$-"
lab=${bins[0]}
cleanup() {
    pkill -f "recv --interface eth0 --counter kernel --xdp-mode tc --json -i 0 -t 120" || true
    "$lab" lab down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
python3 - "$work" <<'PY'
import struct, sys
def hdr(seq, n):
    return b'MCBL' + bytes([1, 0]) + struct.pack('>HIIQQII', 0, 7, 0, seq, 1, n, 0)
def packet(count, n):
    pay = b''.join(hdr(i, n) + b'\0' * (n - 40) for i in range(count))
    udp = struct.pack('>HHHH', 40000, 5001, 8 + len(pay), 0)
    ip = struct.pack('>BBHHHBBH4s4s', 0x45, 0, 28 + len(pay), 1, 0, 1, 17, 0, bytes([10, 77, 0, 1]), bytes([239, 0, 0, 1]))
    return bytes.fromhex('01005e000001' '020000000001' '0800') + ip + udp + pay
open(sys.argv[1] + '/one.bin', 'wb').write(packet(1, 1400))
open(sys.argv[1] + '/three.bin', 'wb').write(packet(3, 1000))
open(sys.argv[1] + '/seven.bin', 'wb').write(packet(7, 400))
PY
"$lab" lab up --receivers ${#bins[@]} >/dev/null
ids=()
for i in "${!bins[@]}"; do
    out="$work/r$i.json"
    before=$(bpftool prog show | grep -c "name mcblast_tc " || true)
    "$lab" lab exec "r$((i + 1))" -- "${bins[$i]}" recv --interface eth0 --counter kernel --xdp-mode tc --json -i 0 -t 120 >"$out" 2>&1 &
    for _ in $(seq 200); do grep -q '"begin"' "$out" && break; sleep 0.1; done
    grep -q '"begin"' "$out" || { echo "receiver of ${bins[$i]} did not start: $(head -c 300 "$out")" >&2; exit 1; }
    ids+=("$(bpftool prog show | grep "name mcblast_tc " | cut -d: -f1 | sort -n | tail -1)")
done
declare -A best
for _ in $(seq "$rounds"); do
    for i in "${!ids[@]}"; do
        for p in one three seven; do
            ns=$(ip netns exec "${MCBLAST_LAB_PREFIX}r1" bpftool prog run id "${ids[$i]}" data_in "$work/$p.bin" repeat 1000000 |
                grep -o 'average): [0-9]*' | grep -o '[0-9]*$')
            k="$i $p"
            if [ -z "${best[$k]:-}" ] || [ "$ns" -lt "${best[$k]}" ]; then best[$k]=$ns; fi
        done
    done
done
echo "| binary | 1 datagram of 1400 B, ns | × first | 3 coalesced datagrams of 1000 B, ns | × first | 7 coalesced datagrams of 400 B, ns | × first |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for i in "${!bins[@]}"; do
    r1=$(printf "%.2f" "$(echo "scale=4; ${best[$i one]} / ${best[0 one]}" | bc)")
    r3=$(printf "%.2f" "$(echo "scale=4; ${best[$i three]} / ${best[0 three]}" | bc)")
    r7=$(printf "%.2f" "$(echo "scale=4; ${best[$i seven]} / ${best[0 seven]}" | bc)")
    echo "| \`${bins[$i]}\` | ${best[$i one]} | $r1 | ${best[$i three]} | $r3 | ${best[$i seven]} | $r7 |"
done
