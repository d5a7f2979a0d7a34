#!/usr/bin/env bash
# Where the receivers' kernel counter spends the lab's time: the same sender
# (ENGINE, 8192 B, flat out for SECONDS) against 9 receivers that only join
# the group, then against 9 running the kernel counter at MODE (tc, native,
# generic; add +sink for --sink), each under `perf record -a` (cpu-clock:
# this VM has no PMU). The lab's receivers process every datagram on the
# sender's CPU (veth hands packets to the backlog of the CPU that sent
# them), so the sender thread's samples per 1000 datagrams are its cost per
# datagram, 9 receivers included; the table lists the symbols whose share
# grew most from join to MODE.
#
#   sudo benches/scripts/counter-profile.sh [ENGINE] [MODE] [SECONDS]
#
# defaults: mmsg tc 8. Samples taken with interrupts off land on the
# instruction that turns them on again: `__bpf_spin_unlock_irqrestore` holds
# the time spent inside the flow's lock (the tracker), not the unlock.
set -euo pipefail
engine=${1:-mmsg}
mode=${2:-tc}
secs=${3:-8}
bin=${MCBLAST:-$(dirname "$0")/../../target/release/mcblast}
work=$(mktemp -d)
export MCBLAST_LAB_PREFIX="mcbp$$-"
cleanup() {
    pkill -f "mcblast recv --interface eth0 --counter kernel --xdp-mode .* -t $((secs + 20))" || true
    pkill -f "mcbp$$-join" || true
    "$bin" lab down >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# One case: receivers of `$1` (join or MODE), the sender flat out under perf;
# writes $work/$1.txt (samples, comm, symbol) and $work/$1.sent.
profile() {
    local m=$1 point=${1%+sink} sink=--sink=off
    [ "$m" != "$point" ] && sink=--sink=on
    "$bin" lab up --receivers 9 >/dev/null
    for i in $(seq 1 9); do
        if [ "$m" = join ]; then
            # A socket that joins and is bound to no port of it: the membership recv holds.
            ip netns exec "${MCBLAST_LAB_PREFIX}r$i" python3 -c "
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack('4s4s', socket.inet_aton('239.0.0.1'), socket.inet_aton('0.0.0.0')))
print('\"begin\"', flush=True); time.sleep($secs + 20)" "mcbp$$-join" >"$work/r$i.out" 2>&1 &
        else
            "$bin" lab exec "r$i" -- "$bin" recv --interface eth0 --counter kernel --xdp-mode "$point" $sink \
                --json -i 0 -t $((secs + 20)) >"$work/r$i.out" 2>&1 &
        fi
    done
    for _ in $(seq 150); do
        [ "$(grep -l '"begin"' "$work"/r*.out 2>/dev/null | wc -l)" -ge 9 ] && break
        sleep 0.2
    done
    [ "$(grep -l '"begin"' "$work"/r*.out | wc -l)" -ge 9 ] || { echo "receivers of $m did not start" >&2; exit 1; }
    sleep 2 # the joins reach the bridge
    perf record -a -o "$work/$m.data" -- sleep $((secs - 1)) >/dev/null 2>&1 &
    local perf=$!
    "$bin" lab exec sender -- "$bin" send --interface eth0 --engine "$engine" -l 8192 -t "$secs" --json -i 0 |
        grep '"summary"' | grep -o '"sent":[0-9]*' | head -1 | cut -d: -f2 >"$work/$m.sent"
    wait "$perf"
    perf report -i "$work/$m.data" --no-children --sort comm,symbol -g none -n 2>/dev/null |
        awk '!/^#/ && NF >= 5 { c = $2; $1 = ""; $2 = ""; print c "\t" $0 }' >"$work/$m.txt"
    pkill -f "mcblast recv --interface eth0 --counter kernel --xdp-mode .* -t $((secs + 20))" || true
    pkill -f "mcbp$$-join" || true
    sleep 1
    "$bin" lab down >/dev/null
}

profile join
profile "$mode"
python3 - "$work" "$mode" "$engine" <<'PY'
import collections, sys
work, mode, engine = sys.argv[1:]
def load(m):
    d = collections.Counter()
    for line in open(f"{work}/{m}.txt"):
        c, rest = line.split('\t', 1)
        parts = rest.split()
        comm, sym = parts[0], (parts[2] if len(parts) > 2 else '?')
        if sym.startswith('bpf_prog_'):
            sym = 'bpf_prog_' + sym.split('_', 3)[-1]
        d[(comm, sym)] += int(c)
    return d, int(open(f"{work}/{m}.sent").read())
(j, sj), (t, st) = load('join'), load(mode)
sender = f"mcblast-send-0"
per = lambda d, s, k: d[k] * 1000 / s
total = lambda d, s: sum(v for (c, _), v in d.items() if c == sender) * 1000 / s
print(f"{engine}, 9 receivers: join {sj} datagrams sent, {mode} {st}; sender thread samples per 1000 datagrams: "
      f"join {total(j, sj):.2f}, {mode} {total(t, st):.2f}\n")
print(f"| symbol | join | {mode} | grew by |")
print("|---|---:|---:|---:|")
keys = {k for k in list(j) + list(t) if k[0] == sender}
rows = sorted(((per(t, st, k) - per(j, sj, k), k[1], per(j, sj, k), per(t, st, k)) for k in keys), reverse=True)
for d, sym, a, b in rows[:20]:
    print(f"| `{sym}` | {a:.3f} | {b:.3f} | {d:+.3f} |")
PY
