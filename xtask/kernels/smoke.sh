#!/bin/sh
# mcblast's kernel smoke suite, run by `cargo xtask kernels` inside each guest
# kernel (QEMU) and on the host. POSIX sh: busybox ash in the guest, dash on
# the host. It judges nothing: it runs each step with a time limit and writes
# what happened as `@@MCBK` lines, which xtask reads and evaluates:
#   @@MCBK step NAME rc=N secs=S     the step ended (rc 124: its time limit; 137, 143: killed; 125: skipped)
#   @@MCBK out NAME LINE             its standard output, line by line
#   @@MCBK err NAME LINE             its standard error (the first 30 and last 20 lines)
#   @@MCBK done secs=S               the suite ended
# Functions keep their variables `local` (ash and dash have it).
# Environment: MCBLAST (the binary), MCBK_OUT (where the lines go), MCBK_TMP
# (scratch directory), MCBLAST_LAB_PREFIX (the lab's namespace prefix).
# Every wait is bounded. The last step removes the lab; on the host xtask
# removes it again whatever happened (a guest's dies with it).

set -u
M=${MCBLAST:-mcblast}
OUT=${MCBK_OUT:-/dev/stdout}
T=${MCBK_TMP:-/tmp}
P=${MCBLAST_LAB_PREFIX:-mcb-}
N=300          # datagrams per receiver test
NE=200         # datagrams per sender engine
START=$(cut -d' ' -f1 /proc/uptime)

now() { cut -d' ' -f1 /proc/uptime; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
emit() { printf '@@MCBK %s\n' "$*" >>"$OUT"; }

# report NAME RC T0: the step's result line, then its output.
report() {
    emit "step $1 rc=$2 secs=$(since "$3")"
    if [ -f "$T/$1.out" ]; then
        head -n 400 "$T/$1.out" | while IFS= read -r l; do emit "out $1 $l"; done
    fi
    if [ -f "$T/$1.err" ]; then
        awk -v n="$(wc -l <"$T/$1.err")" 'NR <= 30 || NR > n - 20' "$T/$1.err" | while IFS= read -r l; do
            emit "err $1 $l"
        done
    fi
}

# step NAME SECS CMD...: runs CMD in the foreground, at most SECS seconds.
step() {
    local n=$1 s=$2 t0; shift 2; t0=$(now)
    timeout -s TERM -k 5 "$s" "$@" >"$T/$n.out" 2>"$T/$n.err" </dev/null
    report "$n" $? "$t0"
}

# skip NAME WHY: a step that could not run (rc 125).
skip() { printf '%s\n' "$2" >"$T/$1.err"; : >"$T/$1.out"; report "$1" 125 "$(now)"; }

# over SECS T0: true once more than SECS seconds have passed since T0.
over() { awk -v a="$(since "$2")" -v l="$1" 'BEGIN { exit !(a > l) }'; }

# alive PID: running (an exited child stays a zombie until `wait`, and kill -0 still reaches it).
alive() { local st; st=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$st" != Z ]; }

# rbg NAME NODE ARGS...: starts `mcblast recv` on a lab node in the background,
# at most 180 s; its pid in bg_NAME, node in node_NAME, start time in t0_NAME.
rbg() {
    local n=$1 node=$2; shift 2
    eval "t0_$n=$(now); node_$n=$node"
    timeout -s TERM -k 5 180 "$M" lab exec "$node" -- "$M" recv -I eth0 -i 0 --json -t 120 "$@" \
        >"$T/$n.out" 2>"$T/$n.err" </dev/null &
    eval "bg_$n=$!"
}

# ready SECS NAME...: waits until every named receiver printed its begin line
# (attached and joined) or exited, then until the bridge lists each ready one
# as a member of 239.0.0.1 on its port, so the first datagram reaches it.
# Prints how many are ready.
ready() {
    local lim=$1 t want="" n p node; shift; t=$(now)
    for n in "$@"; do
        eval "p=\$bg_$n; node=\$node_$n"
        while alive "$p" && ! grep -q '"type":"begin"' "$T/$n.out" 2>/dev/null && ! over "$lim" "$t"; do sleep 0.2; done
        grep -q '"type":"begin"' "$T/$n.out" 2>/dev/null && want="$want $node"
    done
    t=$(now)
    for node in $want; do
        while ! bridge -n "${P}sw" mdb show 2>/dev/null | grep -q "port $node grp 239.0.0.1" && ! over 15 "$t"; do
            sleep 0.2
        done
    done
    echo $want | wc -w
}

# finish SECS NAME...: waits up to SECS for the receivers to stop by
# themselves (end markers + grace), stops those still running (SIGTERM: they
# still print their summary), and reports each.
finish() {
    local lim=$1 t n p t0; shift; t=$(now)
    for n in "$@"; do
        eval "p=\$bg_$n"
        while alive "$p" && ! over "$lim" "$t"; do sleep 0.2; done
        alive "$p" && kill -TERM "$p" 2>/dev/null
    done
    for n in "$@"; do
        eval "p=\$bg_$n; t0=\$t0_$n"
        wait "$p"
        report "$n" $? "$t0"
    done
}

# send NAME ARGS...: `mcblast send` from the lab's sender, at most 60 s.
send() { local n=$1; shift; step "$n" 60 "$M" lab exec sender -- "$M" send -I eth0 -i 0 --json "$@"; }

emit "begin kernel=$(uname -r)"
step version 30 "$M" --version
step lab_up 180 "$M" lab up --receivers 2
step probe 120 "$M" lab exec sender -- "$M" probe -I eth0 --json

# The kernel counter at each attach point, 1470 and 8192-byte datagrams: r1
# counts with both counters (and the drop tracer), r2 with --sink.
for len in 1470 8192; do
    for mode in native generic tc; do
        r="recv_${mode}_$len"; s="sink_${mode}_$len"
        rbg "$r" r1 --xdp-mode "$mode"
        rbg "$s" r2 --xdp-mode "$mode" --sink
        if [ "$(ready 90 "$r" "$s")" -gt 0 ]; then
            send "send_${mode}_$len" -e mmsg -l "$len" -n $N --pps 300
        else
            skip "send_${mode}_$len" "no receiver attached"
        fi
        finish 20 "$r" "$s"
    done
done

# The sender's engines, each its own run id, counted by one socket-counter receiver on r2.
rbg erecv r2 --counter socket --expect-flows 5
ready 60 erecv >/dev/null
id=11
for e in socket mmsg gso uring xdp; do
    send "engine_$e" -e "$e" -l 1470 -n $NE --pps 400 --run-id $id
    id=$((id + 1))
done
finish 10 erecv

# Loss attribution: an nftables rule in r1 drops every 10th datagram at input
# (the drop tracer, in r1's default receiver, must name them); r2's bridge port
# is impaired (every 10th dropped by `mcblast lab impair`), counted by a
# socket-counter receiver, so the impairment is checked where the kernel
# counter does not load.
step nft_drop 30 "$M" lab exec r1 -- nft 'add table inet mcbk; add chain inet mcbk in { type filter hook input priority filter; }; add rule inet mcbk in udp dport 5001 @th,104,8 0 numgen inc mod 10 0 counter drop'
step impair 60 "$M" lab impair r2 --every 10 --json
rbg recv_drops r1
rbg recv_impair r2 --counter socket
if [ "$(ready 90 recv_drops recv_impair)" -gt 0 ]; then
    send send_auto -e mmsg -l 1470 -n $N --pps 300
else
    skip send_auto "no receiver attached"
fi
finish 20 recv_drops recv_impair
step impair_clear 60 "$M" lab impair r2 --clear --json

# The socket layer: a burst of 8192-byte datagrams overflows a 4 KiB receive
# buffer on r2; the drop tracer must charge every overflow to the socket
# (its count = the namespace's Udp RcvbufErrors).
rbg recv_rcvbuf r2 --rcvbuf 4096
if [ "$(ready 90 recv_rcvbuf)" -gt 0 ]; then
    send send_rcvbuf -e mmsg -l 8192 -n $N --pps 100000
else
    skip send_rcvbuf "no receiver attached"
fi
finish 20 recv_rcvbuf

step lab_down 120 "$M" lab down
emit "done secs=$(since "$START")"
