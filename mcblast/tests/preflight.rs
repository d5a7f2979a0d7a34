//! `mcblast preflight` on the lab: per-namespace sysctls of one node are
//! flipped (force_igmp_version, rp_filter, igmp_max_memberships), a socket
//! is bound on the test port, datagram lengths cross the MTU, and each
//! finding must change accordingly, exit status included; `mcblast run`'s
//! per-case check writes every node's JSON and stops on a fail. Only
//! per-namespace sysctls are touched. Privileged: skipped with a message
//! when not root; the lab is removed when the test ends.

use std::net::UdpSocket;
use std::process::Command;
use std::sync::mpsc;

use mcblast::lab::Lab;
use serde_json::Value;

mod common;
use common::*;

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN) for namespaces";

/// Runs `mcblast preflight --json -I eth0 ARGS` on `node`: (exit code, report).
fn preflight(lab: &Lab, node: &str, args: &[&str]) -> (i32, Value) {
    let mut argv = vec!["mcblast", "preflight", "--json", "-I", "eth0"];
    argv.extend_from_slice(args);
    let o = lab.exec_cmd(node, &argv).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let v: Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{node}: not one JSON line ({e}): {text} {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(v["type"], "preflight", "{v}");
    (o.status.code().unwrap(), v)
}

/// The finding of `check` in a report.
fn finding<'a>(v: &'a Value, check: &str) -> &'a Value {
    v["findings"].as_array().unwrap().iter().find(|f| f["check"] == check).unwrap_or_else(|| panic!("no {check}: {v}"))
}

fn sysctl(lab: &Lab, node: &str, kv: &str) {
    let o = Command::new("ip").args(["netns", "exec", &lab.ns_name(node), "sysctl", "-qw", kv]).output().unwrap();
    assert!(o.status.success(), "sysctl {kv}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn findings_follow_the_nodes_settings() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let lab = lab("pf", 1);
    let recv = ["--role", "recv", "--igmp-version", "2"];

    // IGMPv2 asked, the node speaks v3: fail, with the exact fix; exit 1.
    let (code, v) = preflight(&lab, "r1", &recv);
    let f = finding(&v, "igmp_version");
    assert_eq!((code, f["level"].as_str(), v["worst"].as_str()), (1, Some("fail"), Some("fail")), "{v}");
    assert_eq!(f["fix"], "sysctl -w net.ipv4.conf.eth0.force_igmp_version=2");
    sysctl(&lab, "r1", "net.ipv4.conf.eth0.force_igmp_version=2");
    let (code, v) = preflight(&lab, "r1", &recv);
    assert_eq!((code, finding(&v, "igmp_version")["level"].as_str()), (0, Some("ok")), "{v}");
    assert_ne!(v["worst"], "fail");

    // Strict reverse-path filtering warns; loose does not.
    assert_eq!(finding(&v, "rp_filter")["level"], "ok");
    sysctl(&lab, "r1", "net.ipv4.conf.eth0.rp_filter=1");
    let (code, v) = preflight(&lab, "r1", &recv);
    let f = finding(&v, "rp_filter");
    assert_eq!((code, f["level"].as_str()), (0, Some("warn")), "{v}");
    assert!(f["value"].as_str().unwrap().contains("net.ipv4.conf.eth0.rp_filter = 1"), "{f}");
    sysctl(&lab, "r1", "net.ipv4.conf.eth0.rp_filter=2");
    assert_eq!(finding(&preflight(&lab, "r1", &recv).1, "rp_filter")["level"], "ok");

    // Another socket on the port: counted, warned; gone again once closed.
    let f = finding(&v, "ip_multicast_all");
    assert_eq!(f["level"], "ok", "{f}");
    assert!(f["value"].as_str().unwrap().contains("IP_MULTICAST_ALL off; other UDP sockets on port 5001: 0"), "{f}");
    let (bound_tx, bound_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = lab
        .spawn("r1", move || {
            let s = UdpSocket::bind("0.0.0.0:5001").expect("bind 5001");
            bound_tx.send(()).unwrap();
            let _ = done_rx.recv();
            drop(s);
        })
        .unwrap();
    bound_rx.recv().unwrap();
    let (_, v) = preflight(&lab, "r1", &recv);
    let f = finding(&v, "ip_multicast_all");
    done_tx.send(()).unwrap();
    holder.join();
    assert_eq!(f["level"], "warn", "{f}");
    assert!(f["value"].as_str().unwrap().ends_with("other UDP sockets on port 5001: 1"), "{f}");
    assert_eq!(f["fix"], "ss -ulpn 'sport = :5001' shows them: stop them, or test on another port (-p)");
    let (_, v) = preflight(&lab, "r1", &recv);
    assert_eq!(finding(&v, "ip_multicast_all")["level"], "ok");

    // More groups than the namespace's igmp_max_memberships allows.
    sysctl(&lab, "r1", "net.ipv4.igmp_max_memberships=2");
    let three = ["--role", "recv", "-g", "239.0.0.1", "-g", "239.0.0.2", "-g", "239.0.0.3"];
    let (code, v) = preflight(&lab, "r1", &three);
    assert_eq!((code, finding(&v, "igmp_max_memberships")["level"].as_str()), (1, Some("fail")), "{v}");
    assert_eq!(finding(&v, "igmp_max_memberships")["fix"], "sysctl -w net.ipv4.igmp_max_memberships=3");
    assert_eq!(preflight(&lab, "r1", &three[..6]).0, 0);

    // The lab's MTU is 9000: 8972 bytes fit, 8973 leave in 2 fragments (the sender refuses them).
    let (code, v) = preflight(&lab, "sender", &["--role", "send", "-l", "8972"]);
    assert_eq!((code, finding(&v, "mtu")["level"].as_str()), (0, Some("ok")), "{v}");
    let (code, v) = preflight(&lab, "sender", &["--role", "send", "-l", "8973"]);
    let f = finding(&v, "mtu");
    assert_eq!((code, f["level"].as_str()), (1, Some("fail")), "{v}");
    assert!(f["value"].as_str().unwrap().ends_with("MTU 9000 on eth0: 2 fragments per datagram"), "{f}");
    // A receiver is only warned (it cannot stop the sender fragmenting).
    assert_eq!(finding(&preflight(&lab, "r1", &["--role", "recv", "-l", "8973"]).1, "mtu")["level"], "warn");

    // mcblast run's check: every node's report is kept, a fail stops the case.
    let raw = std::env::temp_dir().join(format!("mcbt-pf-{}", std::process::id()));
    std::fs::create_dir_all(&raw).unwrap();
    let args: Vec<String> = ["--igmp-version", "2"].iter().map(|s| s.to_string()).collect();
    sysctl(&lab, "r1", "net.ipv4.conf.eth0.force_igmp_version=0");
    let e = mcblast::check::preflight::before_case(&lab, &lab.receivers(), &args, &raw, "c001").unwrap_err().to_string();
    assert!(
        e.contains("preflight fail on r1: igmp_version") && e.contains("fix: sysctl -w net.ipv4.conf.eth0.force_igmp_version=2"),
        "{e}"
    );
    // A preflight that cannot run stops the case too, saying why.
    let bad: Vec<String> = vec!["-l".into(), "10".into()];
    let e = mcblast::check::preflight::before_case(&lab, &lab.receivers(), &bad, &raw, "c003").unwrap_err().to_string();
    assert!(e.contains("sender: mcblast preflight failed") && e.contains("-l 10 is not a datagram length"), "{e}");
    sysctl(&lab, "r1", "net.ipv4.conf.eth0.force_igmp_version=2");
    mcblast::check::preflight::before_case(&lab, &lab.receivers(), &args, &raw, "c002").expect("passes once forced");
    for node in ["sender", "r1"] {
        let text = std::fs::read_to_string(raw.join(format!("c002-preflight-{node}.json"))).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["role"], if node == "sender" { "send" } else { "recv" });
    }
    std::fs::remove_dir_all(&raw).unwrap();
}

#[test]
fn mcblast_run_keeps_each_nodes_report_and_warns_once() {
    if common::skip(NEEDS) {
        return;
    }
    let _serial = serial();
    let (prefix, _gone) = lab_prefix("pfrun");
    let d = std::env::temp_dir().join(format!("mcbt-pfrun-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    // 400 Mbit/s needs 5 MiB for a 100 ms stall: more than recv's default 4 MiB buffer.
    let plan = d.join("p.toml");
    std::fs::write(&plan, "duration = 0.5\nrepeats = 2\n[lab]\nhosts = 1\nper_host = 2\n[[matrix]]\nload = [\"400M/1470\"]\n").unwrap();
    let out = d.join("out");
    let o = mcblast_run(&plan, &out, &prefix).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    for node in ["sender", "r1", "r2"] {
        let text = std::fs::read_to_string(out.join("raw").join(format!("c001-preflight-{node}.json"))).unwrap();
        let v: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(v["type"], "preflight", "{v}");
        assert_ne!(v["worst"], "fail", "{v}");
    }
    // Once per case (not per repeat), one line for both receivers.
    let warn: Vec<&str> = err.lines().filter(|l| l.contains("preflight warn on r1,r2: rcvbuf")).collect();
    assert_eq!(warn.len(), 1, "{err}");
    assert!(warn[0].contains("fix: mcblast recv --rcvbuf 5242880"), "{}", warn[0]);
    std::fs::remove_dir_all(&d).unwrap();
}
