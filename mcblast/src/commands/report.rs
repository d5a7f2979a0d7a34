//! `mcblast report`: the flags → which report (one run's page, two runs compared, receivers' files merged).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::cli::ReportArgs;

/// `mcblast report RUN_DIR [--out FILE]`, `mcblast report --compare RUN_A RUN_B [--label A=..] [--out FILE]`, and
/// `mcblast report FILE.jsonl...` (receivers' outputs merged).
pub fn run(a: ReportArgs) -> Result<ExitCode> {
    if !a.compare && a.inputs.iter().all(|p| p.is_file()) {
        return crate::report::fanout::report(&a.inputs, a.json);
    }
    let (page, out) = if a.compare {
        if a.inputs.len() != 2 {
            bail!("--compare takes two run directories, RUN_A and RUN_B (given {}): mcblast report --compare runs/A runs/B", a.inputs.len());
        }
        let labels = parse_labels(&a.label)?;
        let page = crate::report::render_compare(&a.inputs[0], &a.inputs[1], &labels)?;
        (page, a.out.clone().unwrap_or_else(|| PathBuf::from("compare.html")))
    } else {
        if a.inputs.len() != 1 {
            bail!(
                "give one run directory (mcblast report runs/DIR), or two with --compare (given {})",
                a.inputs.len()
            );
        }
        if !a.label.is_empty() {
            bail!("--label names the runs of --compare: add --compare RUN_A RUN_B, or leave --label out");
        }
        let dir = &a.inputs[0];
        (crate::report::render_run(dir)?, a.out.clone().unwrap_or_else(|| dir.join("report.html")))
    };
    std::fs::write(&out, page).with_context(|| format!("writing {}", out.display()))?;
    println!("{}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// Parses `--label A=OVN` / `--label B=TGW`.
fn parse_labels(labels: &[String]) -> Result<[Option<String>; 2]> {
    let mut out = [None, None];
    for l in labels {
        let (side, name) = l.split_once('=').unwrap_or(("", ""));
        let i = match side.trim() {
            "A" | "a" => 0,
            "B" | "b" => 1,
            _ => bail!("--label '{l}': write A=NAME or B=NAME, e.g. --label A=OVN --label B=TGW"),
        };
        if name.trim().is_empty() {
            bail!("--label '{l}': the name is empty; write e.g. --label {}=OVN", side.trim());
        }
        out[i] = Some(name.trim().to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = parse_labels(&["A=OVN".into(), "b= TGW ".into()]).unwrap();
        assert_eq!(l, [Some("OVN".into()), Some("TGW".into())]);
        assert!(parse_labels(&["OVN".into()]).unwrap_err().to_string().contains("A=NAME"));
        assert!(parse_labels(&["A=".into()]).unwrap_err().to_string().contains("empty"));
    }
}
