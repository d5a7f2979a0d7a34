//! `mcblast probe`: the JSON contract (one `probe` line, every check says how
//! it was determined), the human table, and a bad interface as a one-line
//! error. Unprivileged: probe attaches nothing.

use std::process::Command;

use serde_json::Value;

mod common;
use common::BIN;

#[test]
fn json_is_one_probe_line_and_every_check_says_how() {
    let out = Command::new(BIN).args(["probe", "-I", "lo", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["type"].as_str(), v["role"].as_str(), v["interface"].as_str()),
        (Some("probe"), Some("probe"), Some("lo"))
    );
    let checks = v["checks"].as_array().unwrap();
    for name in [
        "io_uring",
        "io_uring IORING_OP_SENDMSG",
        "io_uring IORING_OP_SEND_ZC",
        "UDP GSO (kernel)",
        "UDP GSO (device checksum offload)",
        "AF_XDP socket",
        "XDP native",
        "XDP native MTU limit",
        "XDP generic",
        "BTF",
        "tracepoint skb:kfree_skb reason",
    ] {
        let c = checks.iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no check {name}: {v}"));
        assert!(c["how"].as_str().is_some_and(|h| !h.is_empty()), "{c}");
        assert!(c["ok"].is_boolean() || c["ok"].is_null(), "{c}");
    }
    assert!(["gso", "mmsg", "uring", "socket"].contains(&v["auto_engine"].as_str().unwrap()), "{v}");
    assert!(v["auto_reason"].as_str().is_some_and(|r| !r.is_empty() && !r.contains('\n')), "{v}");
    // lo checksums in "hardware": the device check passes.
    let dev = checks.iter().find(|c| c["name"] == "UDP GSO (device checksum offload)").unwrap();
    assert_eq!(dev["ok"], true, "{dev}");
}

#[test]
fn human_table_ends_with_the_auto_choice() {
    let out = Command::new(BIN).args(["probe"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("mcblast probe: kernel "), "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.starts_with("send --engine auto would use"), "{text}");
    // Without -I the interface checks say why they were not made.
    assert!(text.contains("no --interface given"), "{text}");
}

#[test]
fn unknown_interface_is_a_one_line_error() {
    let out = Command::new(BIN).args(["probe", "-I", "mcb-nope0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("mcblast: interface mcb-nope0 not found; interfaces here:"), "{stderr}");
    let out = Command::new(BIN).args(["probe", "-I", "mcb-nope0", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["type"], "error");
}
