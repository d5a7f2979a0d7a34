//! `mcblast run` on "real hosts" over ssh, for real: a lab of 1 sender + 3
//! receivers, an OpenSSH server in every node's namespace (keys made by the
//! test), and the controller run inside the sender's namespace with an
//! inventory of the nodes' lab addresses, so every ssh connection and every
//! datagram stays on the lab network. Checks exact counts in the CSVs, the
//! raw JSON Lines that came back over ssh, the version check that refuses a
//! wrong `mcblast_path` before any traffic, and that Ctrl-C, or a `kill -9`
//! of the run, ends the remote commands (the Ctrl-C run with a YAML
//! inventory, the others with INI); `--deploy` to hosts without mcblast;
//! and examples/ansible's playbook against the same hosts. Nothing
//! (sshd, mcblast, namespace) outlives a test.
//! Privileged: skipped with a message when not root.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

mod common;
use common::csv::{csv, num};
use common::{BIN, TempDir, serial};
use mcblast::lab::{Lab, LabConfig};

const NEEDS: &str = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_BPF) for namespaces and XDP";
const SSHD: &str = "/usr/sbin/sshd";
/// The sshds listen on this port of their node's lab address.
const PORT: u16 = 22022;
const RECEIVERS: [&str; 3] = ["r1", "r2", "r3"];

/// The OpenSSH pieces the test needs; None when all are there.
fn missing_ssh() -> Option<String> {
    let have = |p: &str| Command::new(p).arg("-V").output().is_ok();
    let missing: Vec<&str> = [SSHD, "ssh", "ssh-keygen"]
        .into_iter()
        .filter(|p| if *p == "ssh-keygen" { Command::new(p).arg("-?").output().is_err() } else { !have(p) })
        .collect();
    (!missing.is_empty()).then(|| format!("{} not installed: run `cargo xtask setup` (openssh-server, openssh-client)", missing.join(", ")))
}

/// The sshds of the test: killed when dropped (also on panic); the
/// privilege separation directory removed if the test made it.
struct Sshds {
    children: Vec<(String, Child)>,
    made_privsep: bool,
}
impl Sshds {
    /// The sshd masters.
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }
}
impl Drop for Sshds {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if self.made_privsep {
            let _ = std::fs::remove_dir("/run/sshd");
        }
    }
}

fn run_ok(c: &mut Command) {
    let o = c.output().unwrap_or_else(|e| panic!("{c:?}: {e}"));
    assert!(o.status.success(), "{c:?}: {}", String::from_utf8_lossy(&o.stderr));
}

/// Everything of one test: lab (dropped last), sshds, keys and files.
struct World {
    dir: PathBuf,
    sshds: Sshds,
    lab: Lab,
    _tmp: TempDir,
}

impl World {
    fn addr(&self, node: &str) -> Ipv4Addr {
        self.lab.addr(node)
    }

    /// An inventory of the 4 nodes (`tx`, `rx1`..`rx3`); `extra(host)` adds host vars.
    fn inventory(&self, name: &str, extra: impl Fn(&str) -> String) -> PathBuf {
        let d = self.dir.display();
        let mut t = format!(
            "# made by tests/ssh.rs\n[all:vars]\nansible_user=root\nansible_port={PORT}\n\
             ansible_ssh_private_key_file={d}/id_ed25519\nansible_ssh_common_args=\"-F {d}/ssh_config\"\n\
             mcblast_interface=eth0\nmcblast_path={BIN}\n\n[senders]\ntx ansible_host={} {}\n\n[receivers]\n",
            self.addr("sender"),
            extra("tx")
        );
        for (i, r) in RECEIVERS.iter().enumerate() {
            let h = format!("rx{}", i + 1);
            t += &format!("{h} ansible_host={} {}\n", self.addr(r), extra(&h));
        }
        let p = self.dir.join(name);
        std::fs::write(&p, t).unwrap();
        p
    }

    /// The same inventory in YAML, the receivers' vars in their group.
    fn inventory_yaml(&self, name: &str) -> PathBuf {
        let d = self.dir.display();
        let mut t = format!(
            "# made by tests/ssh.rs\nall:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {d}/id_ed25519\n    \
             ansible_ssh_common_args: -F {d}/ssh_config\n    mcblast_path: {BIN}\n  children:\n    senders:\n      hosts:\n        \
             tx: {{ansible_host: {}, ansible_port: {PORT}, mcblast_interface: eth0}}\n    receivers:\n      \
             vars:\n        ansible_port: {PORT}\n        mcblast_interface: eth0\n      hosts:\n",
            self.addr("sender")
        );
        for (i, r) in RECEIVERS.iter().enumerate() {
            t += &format!("        rx{}:\n          ansible_host: {}\n", i + 1, self.addr(r));
        }
        let p = self.dir.join(name);
        std::fs::write(&p, t).unwrap();
        p
    }

    /// `mcblast run PLAN --out OUT` inside the sender's namespace.
    fn run_cmd(&self, plan: &Path, out: &Path) -> Command {
        let mut c = self.lab.exec_cmd("sender", &["mcblast", "run"]);
        c.arg(plan).arg("--out").arg(out);
        c
    }

    fn run(&self, plan: &Path, out: &Path) -> Output {
        self.run_cmd(plan, out).output().expect("run mcblast run")
    }

    /// The sshd log of a node.
    fn sshd_log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("sshd-{node}.log"))).unwrap_or_default()
    }
}

/// Lab (snooping off: the bridge floods, no membership race), keys, an sshd per node.
fn world(tag: &str) -> World {
    let dir = std::env::temp_dir().join(format!("mcblast-ssh-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let tmp = TempDir(dir.clone());
    let cfg = LabConfig {
        prefix: format!("mcbt{}{tag}-", std::process::id()),
        receivers: 3,
        snooping: false,
        ..LabConfig::default()
    };
    let lab = Lab::up(&cfg).expect("lab up").with_mcblast(BIN);
    for (f, comment) in [("host_key", "mcblast-test-host"), ("id_ed25519", "mcblast-test-client")] {
        run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(dir.join(f)));
    }
    std::fs::copy(dir.join("id_ed25519.pub"), dir.join("authorized_keys")).unwrap();
    let d = dir.display();
    std::fs::write(
        dir.join("ssh_config"),
        format!(
            "Host *\n  StrictHostKeyChecking accept-new\n  UserKnownHostsFile {d}/known_hosts\n  \
             GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n"
        ),
    )
    .unwrap();
    let made_privsep = !Path::new("/run/sshd").exists();
    if made_privsep {
        std::fs::create_dir_all("/run/sshd").unwrap();
    }
    let mut sshds = Sshds { children: Vec::new(), made_privsep };
    for node in ["sender", "r1", "r2", "r3"] {
        let conf = dir.join(format!("sshd-{node}.conf"));
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {}:{PORT}\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n\
                 PidFile {d}/sshd-{node}.pid\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\nPrintLastLog no\n\
                 MaxStartups 50\nLogLevel INFO\n",
                lab.addr(node)
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join(format!("sshd-{node}.log"))).unwrap();
        let child = lab
            .exec_cmd(node, &[SSHD, "-D", "-e", "-f"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start sshd");
        sshds.children.push((node.to_string(), child));
    }
    // every sshd accepts connections, seen from the sender (bounded)
    for node in ["sender", "r1", "r2", "r3"] {
        let to = SocketAddr::from((lab.addr(node), PORT));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ok = lab.run_in("sender", move || TcpStream::connect_timeout(&to, Duration::from_secs(1)).is_ok()).unwrap();
            if ok {
                break;
            }
            for (n, c) in &mut sshds.children {
                if let Some(st) = c.try_wait().unwrap() {
                    panic!("sshd on {n} exited ({st}): {}", std::fs::read_to_string(dir.join(format!("sshd-{n}.log"))).unwrap_or_default());
                }
            }
            assert!(Instant::now() < deadline, "sshd on {node} does not accept connections");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    World { dir, sshds, lab, _tmp: tmp }
}

/// What runs of the test: every process in the lab's namespaces but the
/// pids in `except` (the sshds, their sessions, the `mcblast` they run) and
/// the test's ssh clients (their `-F` names its dir).
fn leftovers(lab: &Lab, dir: &Path, except: &[u32]) -> Vec<String> {
    let mut v = Vec::new();
    for node in ["sender", "r1", "r2", "r3"] {
        let out = Command::new("ip").args(["netns", "pids", &lab.ns_name(node)]).output().unwrap();
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ").trim().to_string();
            if cmd.is_empty() || except.iter().any(|p| p.to_string() == pid) {
                continue;
            }
            v.push(format!("{node}: {pid} {cmd}"));
        }
    }
    let ps = Command::new("ps").args(["-eo", "pid=,args="]).output().unwrap();
    let d = dir.display().to_string();
    v.extend(
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            // a client, or a connection master (`ssh: PATH [mux]`)
            .filter(|l| l.split_once(' ').is_some_and(|(_, a)| a.trim_start().starts_with("ssh ") || a.trim_start().starts_with("ssh: ")))
            .filter(|l| l.contains(&d))
            .map(|l| format!("ssh client: {l}")),
    );
    v
}

/// Waits (bounded) until [`leftovers`] is empty; returns what still runs.
fn wait_gone(lab: &Lab, dir: &Path, except: &[u32]) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(lab, dir, except);
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (bounded) until the 3 receivers and the sender run on their hosts.
fn wait_remote_commands(w: &World, ctl: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = leftovers(&w.lab, &w.dir, &w.sshds.pids());
        let remote = |node: &str, verb: &str| left.iter().filter(|l| l.starts_with(&format!("{node}: ")) && l.contains(&format!(" {BIN} {verb} "))).count();
        let recvs: usize = RECEIVERS.iter().map(|r| remote(r, "recv")).sum();
        if recvs == 3 && remote("sender", "send") == 1 {
            return;
        }
        if let Some(st) = ctl.try_wait().unwrap() {
            panic!("the run ended early ({st})");
        }
        assert!(Instant::now() < deadline, "the remote commands did not start: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The serial lock and a world of `tag`, or None (after saying why) when
/// the test cannot run here: not root, or OpenSSH missing.
fn ssh_world(tag: &str) -> Option<(MutexGuard<'static, ()>, World)> {
    if common::skip(NEEDS) {
        return None;
    }
    if let Some(why) = missing_ssh() {
        common::skipped(&why);
        return None;
    }
    let s = serial();
    Some((s, world(tag)))
}

/// Tears the world down and checks that nothing of it remains: sshds
/// stopped, nothing left in the namespaces, the namespaces gone.
fn teardown(w: World) {
    let World { dir, sshds, lab, _tmp } = w;
    drop(sshds);
    let left = wait_gone(&lab, &dir, &[]);
    let prefix = lab.prefix().to_string();
    drop(lab);
    assert_eq!(left, Vec::<String>::new(), "processes outlived the test");
    assert!(Lab::open(&prefix).is_err(), "the lab's namespaces outlived the test");
    drop(_tmp);
    assert!(!dir.exists());
}

#[test]
fn three_receivers_over_ssh_exact_counts() {
    let Some((_s, w)) = ssh_world("ssh") else {
        return;
    };
    w.inventory("hosts.ini", |_| String::new());
    let plan = w.dir.join("plan.toml");
    std::fs::write(
        &plan,
        "duration = 1\nrepeats = 2\n[hosts]\ninventory = \"hosts.ini\"\n\
         [[matrix]]\nname = \"ssh\"\nload = [\"10M/1470\"]\nreceivers = [2, 3]\n",
    )
    .unwrap();
    let out = w.dir.join("out");
    let o = w.run(&plan, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "mcblast run over ssh failed: {err}");
    assert!(err.contains("checking mcblast"), "{err}");
    let (_, rows) = csv(&out.join("cases.csv"));
    assert_eq!(rows.len(), 2 * 2 + 2 * 3, "repeats x receivers of the cases 2 and 3 receivers");
    for r in &rows {
        let sent = num(r, "sent");
        assert!(sent > 500, "{r:?}");
        assert_eq!((num(r, "received"), num(r, "lost")), (sent, 0), "{r:?}");
        assert_eq!((r["snooping"].as_str(), r["placement"].as_str()), ("", ""), "not the lab's to say: {r:?}");
    }
    let mut seen: Vec<(String, String, String)> =
        rows.iter().map(|r| (r["case"].clone(), r["repeat"].clone(), r["receiver"].clone())).collect();
    seen.sort();
    let mut want = Vec::new();
    for (c, n) in [("1", 2), ("2", 3)] {
        for rep in ["1", "2"] {
            for k in 1..=n {
                want.push((c.to_string(), rep.to_string(), format!("rx{k}")));
            }
        }
    }
    want.sort();
    assert_eq!(seen, want, "case 1 takes the first 2 receivers, case 2 all 3");
    // raw JSON Lines of every node came back over ssh
    for k in 1..=3 {
        let text = std::fs::read_to_string(out.join("raw").join(format!("c002-r1-rx{k}.jsonl"))).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((lines[0]["type"].as_str(), lines[0]["role"].as_str()), (Some("begin"), Some("recv")), "{text}");
        assert!(lines.iter().any(|l| l["type"] == "summary"), "{text}");
    }
    let sender = std::fs::read_to_string(out.join("raw/c001-r1-sender.jsonl")).unwrap();
    assert!(sender.lines().any(|l| l.contains("\"summary\"")), "{sender}");
    assert!(out.join("inventory").is_file(), "the inventory is kept with the results");
    // and they did run through the sshds, logged in from the sender
    for node in ["sender", "r1", "r2", "r3"] {
        let log = w.sshd_log(node);
        assert!(log.contains(&format!("Accepted publickey for root from {}", w.addr("sender"))), "{node}: {log}");
    }
    teardown(w);
}

#[test]
fn wrong_mcblast_refused_before_traffic() {
    let Some((_s, w)) = ssh_world("sshv") else {
        return;
    };
    let fake = w.dir.join("fake-mcblast");
    std::fs::write(&fake, "#!/bin/sh\necho \"mcblast 0.0.9 (fake)\"\n").unwrap();
    run_ok(Command::new("chmod").arg("755").arg(&fake));
    let fake_s = fake.display().to_string();
    w.inventory("hosts.ini", |h| match h {
        // nothing listens there: ssh itself fails
        "rx1" => "ansible_port=1".into(),
        "rx2" => "mcblast_path=/nonexistent/mcblast".into(),
        "rx3" => format!("mcblast_path={fake_s}"),
        _ => String::new(),
    });
    let plan = w.dir.join("plan.toml");
    std::fs::write(&plan, "duration = 1\nrepeats = 1\n[hosts]\ninventory = \"hosts.ini\"\n").unwrap();
    let out = w.dir.join("out");
    let o = w.run(&plan, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    let version = String::from_utf8_lossy(&Command::new(BIN).arg("--version").output().unwrap().stdout).trim().to_string();
    let version = version.strip_prefix("mcblast ").unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines[1..],
        [
            &format!("rx1: ssh failed: ssh: connect to host {} port 1: Connection refused", w.addr("r1")),
            "rx2: mcblast not found at `/nonexistent/mcblast` (install it or set mcblast_path)",
            &format!("rx3: mcblast 0.0.9 (fake) but this is {version}"),
            "mcblast: 3 of 4 host(s) not ready (see above); nothing was sent",
        ],
        "{err}"
    );
    assert!(!out.exists(), "nothing is written, nothing sent");
    teardown(w);
}

#[test]
fn ctrl_c_ends_the_remote_commands() {
    let Some((_s, w)) = ssh_world("sshc") else {
        return;
    };
    w.inventory_yaml("hosts.yml");
    let plan = w.dir.join("plan.toml");
    // 60 s of 1 Mbit/s: the receivers would stay 90 s unless the run ends them
    std::fs::write(&plan, "duration = 60\nrepeats = 1\n[hosts]\ninventory = \"hosts.yml\"\n[[matrix]]\nload = [\"1M/512\"]\n")
        .unwrap();
    let out = w.dir.join("out");
    let mut ctl = w.run_cmd(&plan, &out).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_remote_commands(&w, &mut ctl);
    // SAFETY: kill(2) with a pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(ctl.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let st = loop {
        if let Some(st) = ctl.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the run did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(ctl.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(st.code(), Some(130), "{err}");
    assert!(err.contains("stopped; 0 of 1 case(s) finished"), "{err}");
    // the sshds are still up: only the run's commands must be gone
    let left = wait_gone(&w.lab, &w.dir, &w.sshds.pids());
    assert_eq!(left, Vec::<String>::new(), "remote commands, their sessions or ssh clients outlived the run");
    teardown(w);
}

#[test]
fn killed_run_ends_the_remote_commands() {
    let Some((_s, w)) = ssh_world("sshk") else {
        return;
    };
    w.inventory("hosts.ini", |_| String::new());
    let plan = w.dir.join("plan.toml");
    std::fs::write(&plan, "duration = 60\nrepeats = 1\n[hosts]\ninventory = \"hosts.ini\"\n[[matrix]]\nload = [\"1M/512\"]\n").unwrap();
    let out = w.dir.join("out");
    let mut ctl = w.run_cmd(&plan, &out).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let mut err = ctl.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    wait_remote_commands(&w, &mut ctl);
    // SAFETY: kill(2) with a pid of a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(ctl.id() as i32, libc::SIGKILL) }, 0);
    let killed = Instant::now();
    let st = ctl.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(libc::SIGKILL));
    // within 10 s: the remote commands, their sshd sessions, the ssh clients and the reaper
    let left = wait_gone(&w.lab, &w.dir, &w.sshds.pids());
    assert_eq!(left, Vec::<String>::new(), "outlived the killed run");
    let err = err.join().unwrap();
    // the remote commands stopped on the end of their stdin: every ssh client ended by itself
    assert!(err.contains("its reaper stopped 4 and killed 0 command(s)"), "{err}");
    eprintln!("all gone {:.1} s after the kill", killed.elapsed().as_secs_f64());
    teardown(w);
}

/// `mcblast run --deploy`: no host has mcblast at its `mcblast_path`, the
/// sender's is behind `sudo -n` (and a wrapper that logs its arguments); the
/// first run copies this binary to each host's `mcblast_deploy_dir` and
/// runs there (exact counts; the sender through `sudo -n`), the second
/// finds the build and copies nothing.
#[test]
fn deploy_copies_once_and_runs_the_copy() {
    if Command::new("sudo").arg("-V").output().is_err() {
        common::skipped("sudo not installed: run `cargo xtask setup`");
        return;
    }
    let Some((_s, w)) = ssh_world("sshd") else {
        return;
    };
    let dir = w.dir.clone();
    let deploy_dir = |h: &str| dir.join(format!("deploy-{h}"));
    let (wrap, log) = (dir.join("logwrap"), dir.join("logwrap.log"));
    std::fs::write(&wrap, format!("#!/bin/sh\necho \"$*\" >> {}\nexec \"$@\"\n", log.display())).unwrap();
    run_ok(Command::new("chmod").arg("755").arg(&wrap));
    w.inventory("hosts.ini", |h| {
        let path = match h {
            "tx" => format!("mcblast_path=\"{} sudo -n /nonexistent/mcblast\"", wrap.display()),
            "rx3" => "mcblast_path=mcblast-not-on-path".into(),
            _ => "mcblast_path=/nonexistent/mcblast".into(),
        };
        format!("{path} mcblast_deploy_dir={}", deploy_dir(h).display())
    });
    let plan = w.dir.join("plan.toml");
    std::fs::write(&plan, "duration = 1\nrepeats = 1\n[hosts]\ninventory = \"hosts.ini\"\n[[matrix]]\nload = [\"10M/1470\"]\n").unwrap();
    let hosts = ["tx", "rx1", "rx2", "rx3"];
    let deployed = |h: &str| -> PathBuf {
        let mut builds = std::fs::read_dir(deploy_dir(h)).unwrap_or_else(|e| panic!("{h}: {e}"));
        builds.next().expect("a build dir").unwrap().path().join("mcblast")
    };
    let run = |n: u32| -> (String, Vec<(u64, i64)>) {
        let out = w.dir.join(format!("out{n}"));
        let o = w.run_cmd(&plan, &out).arg("--deploy").output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "run {n}: {err}");
        let (_, rows) = csv(&out.join("cases.csv"));
        assert_eq!(rows.len(), 3, "{err}");
        for r in &rows {
            assert_eq!((num(r, "received"), num(r, "lost")), (num(r, "sent"), 0), "{r:?}");
        }
        use std::os::unix::fs::MetadataExt;
        let id = |h: &&str| std::fs::metadata(deployed(h)).map(|m| (m.ino(), m.mtime_nsec())).unwrap();
        let ids = hosts.iter().map(id).collect();
        (err, ids)
    };
    let (err, first) = run(1);
    let bin = std::fs::read(BIN).unwrap();
    for h in hosts {
        let p = deployed(h);
        assert!(err.contains(&format!("{h}: copied to {}", p.display())), "{h}: {err}");
        assert!(std::fs::read(&p).unwrap() == bin, "{h}: {} is this binary", p.display());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o755);
    }
    // the sender's commands ran the copy, through the inventory's prefix
    let logged = std::fs::read_to_string(&log).unwrap();
    let sudo = format!("sudo -n {} ", deployed("tx").display());
    for verb in ["--version", "preflight", "send"] {
        assert!(logged.lines().any(|l| l.starts_with(&sudo) && l.contains(verb)), "{verb}: {logged}");
    }
    let (err, second) = run(2);
    for h in hosts {
        assert!(err.contains(&format!("{h}: {} is this build, not copied", deployed(h).display())), "{h}: {err}");
    }
    assert_eq!(first, second, "the second run left the deployed files alone");
    teardown(w);
}

/// The playbook of examples/ansible, as the docs run it.
fn playbook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/ansible/mcblast.yml")
}

/// Whether `ansible-playbook` is there (else says how to get it).
fn have_ansible() -> bool {
    // looked up on PATH: running it would make ~/.ansible
    let on_path = |p: std::ffi::OsString| std::env::split_paths(&p).any(|d| d.join("ansible-playbook").is_file());
    let ok = std::env::var_os("PATH").is_some_and(on_path);
    if !ok {
        common::skipped("ansible-playbook not installed: run `cargo xtask setup` (Debian package ansible-core)");
    }
    ok
}

#[test]
fn ansible_playbook_syntax() {
    if !have_ansible() {
        return;
    }
    // ansible's own files in a dir of the test's, not ~/.ansible
    let tmp = TempDir(std::env::temp_dir().join(format!("mcblast-ansible-syntax-{}", std::process::id())));
    let o = Command::new("ansible-playbook")
        .args(["--syntax-check", "-i", "localhost,"])
        .arg(playbook())
        .env("ANSIBLE_HOME", tmp.0.join("home"))
        .env("ANSIBLE_LOCAL_TEMP", tmp.0.join("tmp"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
}

/// A sysctl of a node's namespace (`all`, `eth0`: net.ipv4.conf.IF.KEY).
fn conf(ns: &str, dev: &str, key: &str) -> String {
    let o = Command::new("ip").args(["netns", "exec", ns, "cat", &format!("/proc/sys/net/ipv4/conf/{dev}/{key}")]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `mcblast preflight --json` on a node: the level of each check.
fn preflight_levels(w: &World, node: &str) -> std::collections::BTreeMap<String, String> {
    let o = w.lab.exec_cmd(node, &["mcblast", "preflight", "--json", "--role", "recv", "--interface", "eth0", "--igmp-version", "2"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    v["findings"].as_array().unwrap().iter().map(|f| (f["check"].as_str().unwrap().to_string(), f["level"].as_str().unwrap().to_string())).collect()
}

/// examples/ansible/mcblast.yml against the four sshd hosts with the very
/// inventory `mcblast run` reads (plus where to put files: the test's dir,
/// not /etc): the binary installed, force_igmp_version 2 and rp_filter 2 on
/// `all` and eth0 in every node's namespace (preflight's IGMP check turns
/// from fail to ok) and not in the machine's, rmem_max left alone with a
/// note (read-only in a network namespace), the sysctl and sudoers files
/// written (visudo accepts the line), and a second run changes nothing.
#[test]
fn ansible_playbook_prepares_the_hosts() {
    if !have_ansible() {
        return;
    }
    let Some((_s, w)) = ssh_world("ansb") else {
        return;
    };
    let d = w.dir.clone();
    let inv = w.inventory("hosts.ini", |h| {
        format!(
            "mcblast_install_path={d}/{h}/bin/mcblast mcblast_sysctl_file={d}/{h}/sysctl.conf mcblast_sudoers_file={d}/{h}/sudoers",
            d = d.display()
        )
    });
    for h in ["tx", "rx1", "rx2", "rx3"] {
        std::fs::create_dir_all(d.join(h)).unwrap();
    }
    std::fs::write(
        d.join("ansible.cfg"),
        format!(
            "[defaults]\nhome = {d}/ansible-home\nlocal_tmp = {d}/ansible-local\nremote_tmp = {d}/ansible-remote\n\
             interpreter_python = /usr/bin/python3\nnocolor = true\nforks = 4\n[ssh_connection]\npipelining = true\n\
             ssh_args = -o ControlMaster=auto -o ControlPersist=2s\ncontrol_path_dir = {d}/ansible-cp\n",
            d = d.display()
        ),
    )
    .unwrap();
    let nodes = ["sender", "r1", "r2", "r3"];
    let root_before: Vec<String> = ["force_igmp_version", "rp_filter"].iter().map(|k| conf_root(k)).collect();
    assert_eq!(preflight_levels(&w, "r1")["igmp_version"], "fail", "a fresh namespace speaks IGMPv3");
    let play = || {
        let t = Instant::now();
        let o = w
            .lab
            .exec_cmd("sender", &["ansible-playbook", "-i"])
            .arg(&inv)
            .arg(playbook())
            .args(["-e", &format!("mcblast_binary={BIN}"), "-e", "mcblast_sudo_user=mcblast-test"])
            .env("ANSIBLE_CONFIG", d.join("ansible.cfg"))
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert!(o.status.success(), "{text}");
        eprintln!("ansible-playbook: {:.1} s", t.elapsed().as_secs_f64());
        text
    };
    let first = play();
    for (node, h) in nodes.iter().zip(["tx", "rx1", "rx2", "rx3"]) {
        let ns = w.lab.ns_name(node);
        for dev in ["all", "eth0"] {
            assert_eq!((conf(&ns, dev, "force_igmp_version"), conf(&ns, dev, "rp_filter")), ("2".into(), "2".into()), "{node} {dev}");
        }
        let bin = d.join(h).join("bin/mcblast");
        assert!(std::fs::read(&bin).unwrap() == std::fs::read(BIN).unwrap(), "{h}: the binary");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&bin).unwrap().permissions().mode() & 0o777, 0o755);
        let sysctl = std::fs::read_to_string(d.join(h).join("sysctl.conf")).unwrap();
        for k in ["net.ipv4.conf.all.force_igmp_version = 2", "net.ipv4.conf.eth0.force_igmp_version = 2", "net.ipv4.conf.eth0.rp_filter = 2"] {
            assert!(sysctl.contains(k), "{h}: {k} in {sysctl}");
        }
        assert!(!sysctl.contains("rmem_max"), "read-only in a namespace, not kept: {sysctl}");
        let sudoers = d.join(h).join("sudoers");
        assert_eq!(
            std::fs::read_to_string(&sudoers).unwrap(),
            format!("mcblast-test ALL=(root) NOPASSWD: {}, /usr/bin/pkill\n", bin.display())
        );
        assert_eq!(std::fs::metadata(&sudoers).unwrap().permissions().mode() & 0o777, 0o440);
        run_ok(Command::new("visudo").arg("-cf").arg(&sudoers));
    }
    assert!(first.contains("net.core.rmem_max and wmem_max are read-only here"), "{first}");
    let after: Vec<String> = ["force_igmp_version", "rp_filter"].iter().map(|k| conf_root(k)).collect();
    assert_eq!(after, root_before, "the machine's own sysctls are untouched");
    let levels = preflight_levels(&w, "r1");
    assert_eq!((levels["igmp_version"].as_str(), levels["rp_filter"].as_str()), ("ok", "ok"), "{levels:?}");
    let second = play();
    let recap: Vec<&str> = second.lines().filter(|l| l.contains(" : ok=")).collect();
    assert_eq!(recap.len(), 4, "{second}");
    assert!(recap.iter().all(|l| l.contains(" changed=0 ") && l.contains(" failed=0 ")), "the second run changes nothing: {second}");
    teardown(w);
}

/// A net.ipv4.conf.all sysctl of the machine (the test's own namespace).
fn conf_root(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/all/{key}")).unwrap().trim().to_string()
}
