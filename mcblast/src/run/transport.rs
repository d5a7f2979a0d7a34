//! How `mcblast run` runs `mcblast` on a node: lab nodes through `ip netns
//! exec` ([`Transport::Netns`]), real hosts through the system `ssh` client
//! ([`Transport::Ssh`]: `-o BatchMode=yes`, the user's ~/.ssh/config and
//! keys, plus the inventory's host variables). Both give a local child whose
//! stdout carries the remote JSON Lines as they are printed.
//!
//! Nothing outlives a run: every remote command bounds itself (`-t`), and a
//! [`Proc`] that is dropped before it finished (an error, Ctrl-C) is killed
//! on the node, over ssh with `pkill -f` on its run id, then locally. Every
//! command joins the run's process group ([`set_run_group`], the reaper's,
//! see [`super::reaper`]), and a [`Proc`] holds its command's stdin open: a
//! run that dies without cleaning up closes it, and a command started with
//! `--stop-on-stdin-eof` stops, on the lab or at the far end of ssh.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::inventory::Host;

/// Seconds `ssh` may take to connect.
const SSH_CONNECT_TIMEOUT: u32 = 15;
/// Bound on the remote kill of an abandoned command.
const KILL_LIMIT: Duration = Duration::from_secs(20);
/// The hidden flag of `mcblast send` and `recv` that stops them when their stdin ends.
pub const STOP_ON_EOF: &str = "--stop-on-stdin-eof";

/// The process group commands join (0: a new group of their own).
static RUN_GROUP: AtomicU32 = AtomicU32::new(0);

/// Makes every command started from now on join process group `pgid` (the run's reaper).
pub fn set_run_group(pgid: u32) {
    RUN_GROUP.store(pgid, Ordering::SeqCst);
}

/// Puts `c` in the run's process group: away from the terminal's, so a
/// Ctrl-C reaches the run only, which then stops its commands itself. A
/// group whose leader is gone cannot be joined: then a group of its own.
pub(super) fn join_run_group(c: &mut Command) {
    let g = RUN_GROUP.load(Ordering::SeqCst);
    let alive = g != 0 && std::path::Path::new(&format!("/proc/{g}")).exists();
    c.process_group(if alive { g as i32 } else { 0 });
}

#[derive(Debug, Clone)]
pub enum Transport {
    /// A lab namespace; `program` is this binary.
    Netns { ns: String, program: PathBuf },
    /// A real host over ssh.
    Ssh(Host),
}

/// A place `mcblast` runs: a name for rows and files, the multicast
/// interface (None: the route's) and how to get there.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub interface: Option<String>,
    pub transport: Transport,
}

/// Quotes a word for a POSIX shell (as-is when it needs no quoting).
pub fn shell_quote(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', r"'\''"))
    }
}

/// The `pkill -f` pattern of the commands of a run id. `[-]` keeps the
/// pattern from matching the remote shell that runs pkill itself.
fn run_pattern(run_id: u32) -> String {
    format!("[-]-run-id {run_id}( |$)")
}

impl Node {
    /// A lab node (`sender`, `rK`) in namespace `ns`, this binary on its `eth0`.
    pub fn lab(name: &str, ns: String) -> Node {
        let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("mcblast"));
        Node {
            name: name.to_string(),
            interface: Some(crate::lab::NODE_IF.to_string()),
            transport: Transport::Netns { ns, program },
        }
    }

    /// An inventory host, reached over ssh.
    pub fn ssh(h: &Host) -> Node {
        Node { name: h.name.clone(), interface: h.interface.clone(), transport: Transport::Ssh(h.clone()) }
    }

    pub fn is_ssh(&self) -> bool {
        matches!(self.transport, Transport::Ssh(_))
    }

    /// The program as the user configured it (`mcblast_path`), for messages.
    pub fn program(&self) -> String {
        match &self.transport {
            Transport::Netns { program, .. } => program.display().to_string(),
            Transport::Ssh(h) => h.mcblast_path.clone(),
        }
    }

    /// `ssh` with the options for this host, up to and including the destination.
    pub(super) fn ssh_base(h: &Host) -> Command {
        let mut c = Command::new("ssh");
        c.args(["-o", "BatchMode=yes", "-o"])
            .arg(format!("ConnectTimeout={SSH_CONNECT_TIMEOUT}"))
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]);
        if let Some(p) = h.port {
            c.arg("-p").arg(p.to_string());
        }
        if let Some(u) = &h.user {
            c.arg("-l").arg(u);
        }
        if let Some(k) = &h.key {
            c.arg("-i").arg(expand_tilde(k));
        }
        c.args(&h.ssh_args);
        c.arg("--").arg(&h.address);
        c
    }

    /// The local command that runs `mcblast ARGS` on the node.
    pub fn command(&self, args: &[String]) -> Command {
        self.program_command(None, args)
    }

    /// The local command that runs `PROGRAM ARGS` on the node (None: mcblast;
    /// another program, e.g. the iperf2 sender, is found in the node's PATH and runs unprivileged over ssh).
    pub fn program_command(&self, program: Option<&str>, args: &[String]) -> Command {
        match &self.transport {
            Transport::Netns { ns, program: mcblast } => {
                let mut c = Command::new("ip");
                c.arg("netns").arg("exec").arg(ns);
                match program {
                    Some(p) => c.arg(p),
                    None => c.arg(mcblast),
                };
                c.args(args);
                join_run_group(&mut c);
                c
            }
            Transport::Ssh(h) => {
                let mut c = Self::ssh_base(h);
                // mcblast_path as written (it may be `sudo -n /opt/mcblast`), the rest quoted
                let mut remote = match program {
                    Some(p) => format!("exec {}", shell_quote(p)),
                    None => format!("exec {}", h.mcblast_path),
                };
                for a in args {
                    remote.push(' ');
                    remote.push_str(&shell_quote(a));
                }
                c.arg(remote);
                join_run_group(&mut c);
                c
            }
        }
    }

    /// Ends every command of `run_id` on a real host (nothing to do on the
    /// lab: the local child is the program itself). Bounded.
    pub fn kill_run(&self, run_id: u32) -> Result<()> {
        let Transport::Ssh(h) = &self.transport else { return Ok(()) };
        let sudo = if h.mcblast_path.split_whitespace().next() == Some("sudo") { "sudo -n " } else { "" };
        let mut c = Self::ssh_base(h);
        c.arg(format!("{sudo}pkill -f {}", shell_quote(&run_pattern(run_id))));
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        join_run_group(&mut c);
        let mut child = c.spawn().with_context(|| format!("{}: starting ssh", self.name))?;
        let deadline = Instant::now() + KILL_LIMIT;
        loop {
            if let Some(st) = child.try_wait()? {
                // pkill: 0 killed, 1 nothing left to kill
                return match st.code() {
                    Some(0 | 1) => Ok(()),
                    _ => bail!("{}: remote pkill failed ({st})", self.name),
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{}: remote pkill did not finish within {} s", self.name, KILL_LIMIT.as_secs());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `mcblast --version` on the node: Ok(None) when it is this build,
    /// Ok(Some(line)) naming what is wrong (one line, starting with the node name).
    pub fn check_version(&self, limit: Duration) -> Result<Option<String>> {
        Ok(match self.version(limit)? {
            Version::Same => None,
            Version::Other(line) | Version::Unreachable(line) => Some(line),
        })
    }

    /// `mcblast --version` on the node, and what it says.
    pub fn version(&self, limit: Duration) -> Result<Version> {
        let p = Proc::spawn(self, &["--version".to_string()], None)?;
        let (code, out, err) = p.finish(limit)?;
        let name = &self.name;
        let last_err = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        let prog = self.program();
        Ok(match code {
            Some(0) => match out.lines().next().and_then(|l| l.trim().strip_prefix("mcblast ")) {
                Some(v) if v == crate::version::VERSION => Version::Same,
                Some(v) => Version::Other(format!("{name}: mcblast {v} but this is {}", crate::version::VERSION)),
                None => Version::Other(format!(
                    "{name}: `{prog} --version` printed {:?}, not mcblast's version (set mcblast_path to the mcblast binary)",
                    out.lines().next().unwrap_or("").trim()
                )),
            },
            Some(255) if self.is_ssh() => Version::Unreachable(format!("{name}: ssh failed: {last_err}")),
            Some(126 | 127) => Version::Other(format!("{name}: mcblast not found at `{prog}` (install it or set mcblast_path)")),
            _ if last_err.contains("not found") || last_err.contains("No such file") => {
                Version::Other(format!("{name}: mcblast not found at `{prog}` (install it or set mcblast_path)"))
            }
            c => Version::Other(format!(
                "{name}: `{prog} --version` failed (exit {}): {last_err}",
                c.map_or("by a signal".into(), |c| c.to_string())
            )),
        })
    }
}

/// What `mcblast --version` on a node said: this build, another (or none:
/// a line naming the node and the problem), or ssh failed.
#[derive(Debug, Clone, PartialEq)]
pub enum Version {
    Same,
    Other(String),
    Unreachable(String),
}

fn expand_tilde(p: &str) -> OsString {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest).into_os_string(),
        _ => p.into(),
    }
}

/// A command on a node whose stdout lines (streamed as they come) and
/// stderr are read on threads. Dropped before [`Proc::finish`] saw it end,
/// it is killed: on the node (ssh, by run id), then the local child.
pub struct Proc {
    pub node: String,
    target: Node,
    run_id: Option<u32>,
    child: Child,
    /// held open while the command runs (see [`STOP_ON_EOF`])
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    err: Option<std::thread::JoinHandle<String>>,
    /// stdout lines taken so far
    taken: String,
    done: bool,
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stdin = None;
        if self.done {
            return;
        }
        if let Some(id) = self.run_id
            && let Err(e) = self.target.kill_run(id)
        {
            eprintln!("\nmcblast run: {e:#}: check for a leftover `mcblast` with --run-id {id} on {}", self.node);
        }
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `mcblast ARGS` on `node`. `run_id` (the `--run-id` in `args`)
    /// lets an abandoned remote command be found and killed.
    pub fn spawn(node: &Node, args: &[String], run_id: Option<u32>) -> Result<Proc> {
        Self::start(node, None, args, run_id)
    }

    /// Starts `PROGRAM ARGS` on `node` (not mcblast: e.g. the iperf2 client).
    /// It must bound itself (iperf's `-t`): over ssh it is not killed by run id.
    pub fn spawn_program(node: &Node, program: &str, args: &[String]) -> Result<Proc> {
        Self::start(node, Some(program), args, None)
    }

    fn start(node: &Node, program: Option<&str>, args: &[String], run_id: Option<u32>) -> Result<Proc> {
        let mut child = node
            .program_command(program, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| match node.transport {
                Transport::Ssh(_) => format!("{}: starting ssh (install openssh-client)", node.name),
                Transport::Netns { .. } => format!("{}: starting {} {}", node.name, program.unwrap_or("mcblast"), args.join(" ")),
            })?;
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let rd = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for l in rd.lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut e = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = e.read_to_string(&mut s);
            s
        });
        Ok(Proc {
            node: node.name.clone(),
            target: node.clone(),
            run_id,
            child,
            stdin,
            lines,
            err: Some(err),
            taken: String::new(),
            done: false,
        })
    }

    /// The first stdout line (bounded, Ctrl-C aware); None when the command
    /// ended without printing one.
    pub fn first_line(&mut self, limit: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + limit;
        loop {
            super::check_stop()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    self.taken.push_str(&l);
                    self.taken.push('\n');
                    return Ok(Some(l));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(None),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > deadline {
                bail!("{}: printed nothing within {:.0} s", self.node, limit.as_secs_f64());
            }
        }
    }

    /// The stderr so far is only known at the end: waits for it (briefly).
    fn stderr_text(&mut self) -> String {
        match self.err.take() {
            Some(h) => {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !h.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if h.is_finished() { h.join().unwrap_or_default() } else { String::new() }
            }
            None => String::new(),
        }
    }

    /// Waits (bounded, Ctrl-C aware) for exit; returns (status code, stdout, stderr).
    pub fn finish(mut self, limit: Duration) -> Result<(Option<i32>, String, String)> {
        self.wait(limit)
    }

    /// [`Proc::finish`] without giving the Proc up.
    pub fn wait(&mut self, limit: Duration) -> Result<(Option<i32>, String, String)> {
        let deadline = Instant::now() + limit;
        let st = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            super::check_stop()?;
            if Instant::now() > deadline {
                bail!("{}: did not finish within {:.0} s", self.node, limit.as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // ssh's own failure (255) may leave the remote command running
        self.done = !(self.target.is_ssh() && st.code() == Some(255));
        self.stdin = None;
        // the rest of stdout: the pipe closes at exit (bounded, in case
        // something the command started still holds it)
        let drain = Instant::now() + Duration::from_secs(5);
        loop {
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(l) => {
                    self.taken.push_str(&l);
                    self.taken.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() > drain => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        let err = self.stderr_text();
        let out = std::mem::take(&mut self.taken);
        Ok((st.code(), out, err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            name: "rx1".into(),
            address: "10.0.1.11".into(),
            user: Some("ubuntu".into()),
            port: Some(2222),
            key: Some("/k/lab.pem".into()),
            ssh_args: vec!["-o".into(), "ProxyJump=bastion".into()],
            interface: Some("ens5".into()),
            mcblast_path: "sudo -n /opt/mcblast".into(),
            deploy_dir: "~/.cache/mcblast".into(),
        }
    }

    #[test]
    fn ssh_command_line() {
        let n = Node::ssh(&host());
        let c = n.command(&["recv".into(), "--run-id".into(), "7".into(), "a b".into(), "it's".into()]);
        assert_eq!(c.get_program(), "ssh");
        let args: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(
            args,
            [
                "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", "-o", "ServerAliveInterval=5", "-o",
                "ServerAliveCountMax=3", "-p", "2222", "-l", "ubuntu", "-i", "/k/lab.pem", "-o", "ProxyJump=bastion",
                "--", "10.0.1.11", r"exec sudo -n /opt/mcblast recv --run-id 7 'a b' 'it'\''s'"
            ]
        );
    }

    #[test]
    fn netns_command_line() {
        let n = Node { name: "r1".into(), interface: None, transport: Transport::Netns { ns: "p-r1".into(), program: "/x/mcblast".into() } };
        let args: Vec<String> = n.command(&["recv".into()]).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["netns", "exec", "p-r1", "/x/mcblast", "recv"]);
        let args: Vec<String> =
            n.program_command(Some("iperf"), &["-c".into()]).get_args().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args, ["netns", "exec", "p-r1", "iperf", "-c"]);
    }

    /// Another program than mcblast runs as itself over ssh, without mcblast_path's sudo.
    #[test]
    fn ssh_program_command_line() {
        let c = Node::ssh(&host()).program_command(Some("iperf"), &["-c".into(), "239.0.0.1".into(), "-e".into()]);
        let last = c.get_args().last().unwrap().to_string_lossy().into_owned();
        assert_eq!(last, "exec iperf -c 239.0.0.1 -e");
    }

    /// The pattern, through a shell as on the remote side, finds the
    /// command of its run id only (not another id, not the shell itself).
    #[test]
    fn kill_pattern_finds_the_run_only() {
        let id = 3_000_000_000u32 + std::process::id();
        let fake = |argv0: String| {
            Command::new("bash").arg("-c").arg(format!("exec -a {} sleep 30", shell_quote(&argv0))).spawn().unwrap()
        };
        let mut mine = fake(format!("mcblast recv --run-id {id} -t"));
        let mut other = fake(format!("mcblast recv --run-id {id}1 -t"));
        let out = Command::new("sh").arg("-c").arg(format!("pgrep -f {}", shell_quote(&run_pattern(id)))).output().unwrap();
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.trim().parse().unwrap()).collect();
        for c in [&mut mine, &mut other] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(pids, [mine.id()]);
        assert_eq!(shell_quote("[-]-run-id 42( |$)"), "'[-]-run-id 42( |$)'");
    }
}
