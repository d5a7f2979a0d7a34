//! Errors a user can cause with `mcblast recv`: one clear line on stderr,
//! exit status 2, and with `--json` an `"error"` line on stdout. No traffic.

use std::process::{Command, Output};

mod common;
use common::{BIN, one_line_error};

fn recv(args: &[&str]) -> Output {
    Command::new(BIN).arg("recv").args(args).output().expect("run mcblast")
}

#[test]
fn unknown_interface_lists_the_real_ones() {
    let out = recv(&["--interface", "mcbnosuch0", "--counter", "socket"]);
    one_line_error(&out, &["interface mcbnosuch0 not found", "lo"]);
}

#[test]
fn group_must_be_multicast() {
    let out = recv(&["--group", "10.1.2.3", "--interface", "lo", "--counter", "socket"]);
    one_line_error(&out, &["10.1.2.3 is not a multicast group", "224.0.0.0/4"]);
}

#[test]
fn run_id_zero_and_absurd_durations_are_refused() {
    one_line_error(&recv(&["--run-id", "0", "--interface", "lo", "--counter", "socket"]), &["run ids are non-zero"]);
    one_line_error(&recv(&["-t", "1e20", "--interface", "lo", "--counter", "socket"]), &["--time", "seconds"]);
    one_line_error(&recv(&["--grace=-1", "--interface", "lo", "--counter", "socket"]), &["--grace"]);
    one_line_error(&recv(&["--max-loss", "150", "--interface", "lo", "--counter", "socket"]), &["--max-loss", "percentage"]);
}

#[test]
fn iperf2_flags_that_do_not_fit_are_refused() {
    let lo = ["--interface", "lo"];
    let with = |extra: &[&str]| recv(&[&lo[..], extra].concat());
    one_line_error(&with(&["--format", "iperf2", "--run-id", "7"]), &["--run-id", "source port"]);
    one_line_error(&with(&["--iperf2-server"]), &["--iperf2-server", "--format iperf2"]);
    one_line_error(&with(&["--format", "iperf2", "--iperf2-server", "--counter", "both"]), &["--iperf2-server", "--counter"]);
    one_line_error(&with(&["--sender-clock", "synced", "--counter", "socket"]), &["--sender-clock", "--format iperf2"]);
}

#[test]
fn json_mode_also_prints_an_error_line() {
    let out = recv(&["--json", "--interface", "mcbnosuch0", "--counter", "socket"]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(v["type"], "error");
    assert!(v["message"].as_str().unwrap().contains("not found"), "{v}");
}

#[test]
fn kernel_counter_without_privileges_names_the_capabilities() {
    // Run as `nobody` (no capabilities), if we can switch user at all.
    if !mcblast::netns::privileged() || Command::new("setpriv").arg("--version").output().is_err() {
        common::skipped("needs root and setpriv (util-linux) to drop to an unprivileged user");
        return;
    }
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", BIN, "recv", "--interface", "lo"])
        .output()
        .expect("run setpriv");
    one_line_error(&out, &["CAP_BPF", "CAP_NET_ADMIN", "--counter socket"]);
}
