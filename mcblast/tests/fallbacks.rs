//! The kernel counter's fallbacks for kernels older than this one, run here
//! by hiding the features they replace (`MCBLAST_PRETEND_MISSING`, read by
//! the kernel-feature probe): without tcx links (before 6.6) the counter
//! counts at tc ingress through a classic clsact filter, and without
//! `bpf_ktime_get_tai_ns` (before 6.1) it reads the monotonic clock plus the
//! TAI offset measured at attach. Counts stay exact (ground truth: the
//! sender's count), delays stay on the TAI scale, and a classic filter a
//! `kill -9` left is removed by the next receiver, which says so. `lab
//! impair` without tcx puts its program in a classic egress filter.
//! Privileged, skipped with a message when not root.

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and tc";
const OLD: [(&str, &str); 1] = [("MCBLAST_PRETEND_MISSING", "tai,tcx")];

/// The tc filters on the ingress of `node`'s eth0, as `tc filter show` lists them.
fn ingress_filters(lab: &mcblast::lab::Lab, node: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &lab.ns_name(node), "tc", "filter", "show", "dev", "eth0", "ingress"])
        .output()
        .expect("tc");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn send_gso(lab: &mcblast::lab::Lab) -> u64 {
    u(&sender_summary(spawn_send(lab, &["--engine", "gso", "-n", "3000", "--pps", "100000", "-l", "8192"])), "sent")
}

#[test]
fn without_tcx_and_the_tai_helper_counts_exactly_with_a_classic_filter() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("fb", 1);
    let r = start_recv_env(&lab, "r1", &["--counter", "kernel", "--xdp-mode", "tc"], &OLD);
    let why = r.begin["attach_reason"].as_str().unwrap_or_default().to_string();
    assert_eq!(r.begin["xdp_mode"], "tc", "{}", r.begin);
    assert!(why.contains("classic tc filter") && why.contains("monotonic clock"), "{why}");
    assert!(ingress_filters(&lab, "r1").contains("mcblast_tc"), "no classic filter: {}", ingress_filters(&lab, "r1"));
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("join");
    let sent = send_gso(&lab);
    assert_eq!(sent, 3000);
    let lines = finish(r);
    let s = summary(&lines, "kernel");
    let f = &s["flows"][0];
    assert_eq!((u(f, "received"), u(f, "lost"), u(f, "duplicates")), (sent, 0, 0), "{s}");
    assert!(u(s, "coalesced") > 0, "the gso batches crossed whole: {s}");
    // Delays on the TAI scale, as the sender stamped them: sender and
    // receiver share this machine's clock, so a delay is a few µs to ms.
    // Without the offset they would be off by the monotonic clock's distance
    // from TAI (decades). A step of the system clock after the attach (this
    // VM's host syncs its clock now and then: once a CI run saw -5.5 ms)
    // moves them by its size until the receiver's next interval measures the
    // offset again; hence within a second, not at least 0.
    let d = &f["delay"];
    assert_eq!(d["trusted"], true, "{f}");
    let (lo, hi) = (d["min_us"].as_f64().expect("delay min"), d["max_us"].as_f64().expect("delay max"));
    assert!(lo > -1e6 && hi < 1e6, "delays {lo}..{hi} µs: not on the sender's clock: {f}");
    let left = ingress_filters(&lab, "r1");
    assert!(!left.contains("mcblast"), "the classic filter outlived the receiver: {left}");
}

#[test]
fn a_classic_filter_left_by_kill_9_is_removed_by_the_next_receiver() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("fk", 1);
    let mut r = start_recv_env(&lab, "r1", &["--counter", "kernel", "--xdp-mode", "tc"], &OLD);
    let pid = r.child.id();
    // A second receiver on the same interface while the first lives: refused.
    let mut argv = vec!["mcblast", "recv", "--interface", "eth0", "--counter", "kernel", "--xdp-mode", "tc", "-t", "5"];
    let out = lab.exec_cmd("r1", &argv).envs(OLD).output().expect("second recv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains(&format!("another mcblast (pid {pid})")), "{err}");
    r.child.kill().unwrap(); // SIGKILL: the classic filter stays
    r.child.wait().unwrap();
    assert!(ingress_filters(&lab, "r1").contains("mcblast_tc"), "{}", ingress_filters(&lab, "r1"));
    // The next receiver removes it, says so, attaches its own (and counts:
    // see the test above), and leaves nothing when it stops.
    argv[9] = "2";
    let out = lab.exec_cmd("r1", &argv).envs(OLD).output().expect("next recv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains(&format!("removed the tc filter a killed mcblast (pid {pid}) left on eth0")), "{err}");
    let left = ingress_filters(&lab, "r1");
    assert!(!left.contains("mcblast"), "{left}");
}

/// `lab impair` without tcx links: the program as a classic filter on the
/// bridge port's egress, which stays after the command exits; r1 loses
/// exactly every 10th data datagram; `--clear` removes the filter.
#[test]
fn lab_impair_without_tcx_uses_a_classic_egress_filter() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("fi", 1);
    let impair = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(["lab", "impair"])
            .args(args)
            .env(mcblast::lab::PREFIX_ENV, lab.prefix())
            .envs(OLD)
            .output()
            .expect("lab impair");
        assert!(out.status.success(), "lab impair {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let port_filters = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &lab.access_ns("r1"), "tc", "filter", "show", "dev", "r1", "egress"])
            .output()
            .expect("tc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    impair(&["r1", "--every", "10"]);
    assert!(port_filters().contains("mcblast_impair"), "{}", port_filters());
    let r = start_recv(&lab, "r1", &["--counter", "kernel"]);
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("join");
    let s = sender_summary(spawn_send(&lab, &["--engine", "mmsg", "-n", "1000", "--pps", "5000", "-l", "1470"]));
    assert_eq!(u(&s, "sent"), 1000);
    let lines = finish(r);
    let f = &summary(&lines, "kernel")["flows"][0];
    assert_eq!((u(f, "received"), u(f, "lost")), (900, 100), "{f}");
    impair(&["r1", "--clear"]);
    assert!(!port_filters().contains("mcblast"), "{}", port_filters());
}

/// Without XDP multi-buffer (before 5.18) the counter loads its one-buffer
/// XDP program: generic XDP hands it whole 8192-byte datagrams (GSO batches
/// linearised) and it counts every one; native XDP on a veth at MTU 9000
/// is refused with the reason and what to use instead.
#[test]
fn without_xdp_multi_buffer_a_one_buffer_program_counts_exactly() {
    if skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("ff", 1);
    let frags = [("MCBLAST_PRETEND_MISSING", "frags")];
    let argv = ["mcblast", "recv", "--interface", "eth0", "--counter", "kernel", "--xdp-mode", "native", "-t", "5"];
    let out = lab.exec_cmd("r1", &argv).envs(frags).output().expect("native recv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("without XDP multi-buffer") && err.contains("--xdp-mode tc"), "{err}");
    let r = start_recv_env(&lab, "r1", &["--counter", "kernel", "--xdp-mode", "generic"], &frags);
    let why = r.begin["attach_reason"].as_str().unwrap_or_default().to_string();
    assert!(why.contains("one-buffer XDP program"), "{why}");
    lab.wait_members(Ipv4Addr::new(239, 0, 0, 1), &lab.receivers(), Duration::from_secs(15)).expect("join");
    let sent = send_gso(&lab);
    assert_eq!(sent, 3000);
    let lines = finish(r);
    let s = summary(&lines, "kernel");
    let f = &s["flows"][0];
    assert_eq!((u(f, "received"), u(f, "lost"), u(f, "duplicates")), (sent, 0, 0), "{s}");
}
