//! Dispatch: the one place that names every command. `main` parses the flags
//! ([`crate::cli`]), runs the command, prints an error as one line and maps
//! the outcome to an exit status.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use crate::cli::{Cli, Command, GenerateCommand, LabCommand};

/// Entry point: parse, run, print errors as one line, map to an exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(e),
    };
    let json = match &cli.command {
        Command::Send(a) => a.common.json,
        Command::Recv(a) => a.common.json,
        Command::Lab(LabCommand::Impair(a)) => a.json,
        Command::Lab(_) => false,
        Command::Probe(a) => a.json,
        Command::Run(_) | Command::RunReaper(_) => false,
        Command::Preflight(a) => a.json,
        Command::Report(a) => a.json,
        Command::Generate(_) => false,
    };
    let res = match cli.command {
        Command::Send(a) => crate::commands::send::run(a),
        Command::Recv(a) => crate::commands::recv::run(a),
        Command::Lab(c) => crate::commands::lab::run(c),
        Command::Probe(a) => crate::commands::check::probe(a),
        Command::Run(a) => crate::commands::run::run(a, crate::report::after_run),
        Command::RunReaper(a) => crate::commands::run::reaper(a),
        Command::Preflight(a) => crate::commands::check::preflight(a),
        Command::Report(a) => crate::commands::report::run(a),
        Command::Generate(c) => generate(c),
    };
    match res {
        Ok(code) => code,
        Err(e) => {
            if crate::output::is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            crate::output::print_error(json, &e);
            ExitCode::from(2)
        }
    }
}

fn generate(c: GenerateCommand) -> Result<ExitCode> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    match c {
        GenerateCommand::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            clap_mangen::generate_to(cmd, &dir).map_err(|e| anyhow::anyhow!("cannot write the man pages into {}: {e}", dir.display()))?;
        }
        GenerateCommand::Completions { shell } => clap_complete::generate(shell, &mut cmd, "mcblast", &mut std::io::stdout().lock()),
    }
    Ok(ExitCode::SUCCESS)
}

/// Help and version print as clap renders them; a usage error becomes one
/// line, `mcblast: <what is wrong> (see --help)`, and exit status 2.
fn parse_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("mcblast: {} (see --help)", one_line(&e.render().to_string()));
            ExitCode::from(2)
        }
    }
}

/// The first line of a clap error without its `error: ` prefix, with a
/// `tip:` line folded in when clap offers one.
fn one_line(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("invalid arguments");
    let mut first = first.strip_prefix("error: ").unwrap_or(first).to_string();
    // "the following required arguments were not provided:" lists them on the next lines
    if first.ends_with(':') {
        let listed: Vec<&str> = rendered
            .lines()
            .skip_while(|l| !l.contains(first.as_str()))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .map(str::trim)
            .collect();
        if !listed.is_empty() {
            first = format!("{} {}", first, listed.join(" "));
        }
    }
    match lines.find(|l| l.starts_with("tip:")) {
        Some(tip) => format!("{first}; {tip}"),
        None => first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_pct;
    #[test]
    fn impair_percentages_are_ppm_in_range() {
        assert_eq!(parse_pct("1"), Ok(10_000));
        assert_eq!(parse_pct("0.5%"), Ok(5_000));
        assert_eq!(parse_pct("100"), Ok(1_000_000));
        assert_eq!(parse_pct("0.0001"), Ok(1));
        for bad in ["0", "-1", "100.5", "x", "0.00001", "NaN"] {
            assert!(parse_pct(bad).unwrap_err().contains("out of range"), "{bad}");
        }
        let e = Cli::try_parse_from(["mcblast", "lab", "impair", "r1", "--every", "3", "--loss", "1"]).unwrap_err();
        assert!(one_line(&e.render().to_string()).contains("cannot be used with"));
        let e = Cli::try_parse_from(["mcblast", "lab", "impair", "r1", "--clear", "--every", "3"]).unwrap_err();
        assert!(one_line(&e.render().to_string()).contains("cannot be used with"));
    }
    #[test]
    fn clap_errors_fold_to_one_line() {
        let e = Cli::try_parse_from(["mcblast", "send", "-b", "12x"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(!line.contains('\n'));
        assert!(line.contains("unknown unit 'x'"), "{line}");
        let e = Cli::try_parse_from(["mcblast", "send", "--nope"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(line.starts_with("unexpected argument '--nope'"), "{line}");
        let e = Cli::try_parse_from(["mcblast", "report"]).unwrap_err();
        let line = one_line(&e.render().to_string());
        assert!(line.starts_with("the following required arguments were not provided: <RUN_DIR | FILE.jsonl>"), "{line}");
    }
    #[test]
    fn generate_writes_a_man_page_per_command() {
        let dir = std::env::temp_dir().join(format!("mcblast-man-test-{}", std::process::id()));
        let res = generate(GenerateCommand::Man { dir: dir.clone() });
        let top = std::fs::read_to_string(dir.join("mcblast.1"));
        let recv = std::fs::read_to_string(dir.join("mcblast-recv.1"));
        let hidden = dir.join("mcblast-generate.1").exists();
        let _ = std::fs::remove_dir_all(&dir);
        res.unwrap();
        assert!(top.unwrap().contains(".TH mcblast 1"));
        assert!(recv.unwrap().contains("\\-\\-xdp\\-mode"));
        assert!(!hidden, "the hidden generate command has no page");
    }
}
