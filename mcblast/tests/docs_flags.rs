//! Every long flag that `--help` shows, of every subcommand (nested ones such
//! as `lab up` included), is documented: it appears in docs/ or the README.
//! Hidden flags (test aids) are not in `--help` and need no page.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mcblast");

fn help(cmd: &[&str]) -> String {
    let out = Command::new(BIN).args(cmd).arg("--help").output().expect("run mcblast --help");
    assert!(out.status.success(), "mcblast {cmd:?} --help: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// The subcommands listed under `Commands:` (clap's `help` left out).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| l.trim_end() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// The long flags of the option lines (`  -x, --name` or `      --name`);
/// description lines are indented deeper and never count.
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .filter_map(|l| {
            let rest = if l.len() > 6 && l.as_bytes()[2] == b'-' && l[4..].starts_with(", --") {
                &l[8..]
            } else {
                l.strip_prefix("      --")?
            };
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            (!name.is_empty()).then(|| format!("--{name}"))
        })
        .collect()
}

/// Every (command path, flag) that `--help` shows.
fn every_flag() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    while let Some(path) = todo.pop() {
        let args: Vec<&str> = path.iter().map(String::as_str).collect();
        let h = help(&args);
        for f in long_flags(&h) {
            out.push((format!("mcblast {}", path.join(" ")).trim_end().to_string(), f));
        }
        for sub in subcommands(&h) {
            let mut p = path.clone();
            p.push(sub);
            todo.push(p);
        }
    }
    out
}

/// README.md and every page of docs/.
fn documentation() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for e in std::fs::read_dir(root.join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            text.push_str(&std::fs::read_to_string(&p).unwrap());
        }
    }
    text
}

/// `--flag` as a whole word: not the start of a longer flag.
fn mentions(doc: &str, flag: &str) -> bool {
    doc.match_indices(flag).any(|(i, _)| {
        let next = doc[i + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

#[test]
fn every_flag_in_help_is_documented() {
    let flags = every_flag();
    let cmds: std::collections::BTreeSet<&str> = flags.iter().map(|(c, _)| c.as_str()).collect();
    for c in ["mcblast send", "mcblast recv", "mcblast lab up", "mcblast lab impair", "mcblast run", "mcblast report"] {
        assert!(cmds.contains(c), "no flags found for {c}: the --help parser is broken ({cmds:?})");
    }
    assert!(flags.len() > 80, "only {} flags found: the --help parser is broken", flags.len());
    let doc = documentation();
    let missing: Vec<String> = flags
        .iter()
        .filter(|(_, f)| f != "--help" && !mentions(&doc, f))
        .map(|(c, f)| format!("{c} {f}"))
        .collect();
    assert!(missing.is_empty(), "flags in --help that neither docs/ nor README.md mention:\n  {}", missing.join("\n  "));
}

#[test]
fn the_help_parser_reads_clap_option_lines_only() {
    let h = "Usage: x\n\nCommands:\n  up      Create\n          --hosts or --preset)\n  help    Print\n\nOptions:\n  -g, --group <GROUP>\n          Group; see --other\n      --zerocopy\n  -h, --help     Print help\n";
    assert_eq!(subcommands(h), ["up"]);
    assert_eq!(long_flags(h), ["--group", "--zerocopy", "--help"]);
    assert!(mentions("use `--flows 4`", "--flows"));
    assert!(!mentions("use `--flows-x 4`", "--flows"));
}
