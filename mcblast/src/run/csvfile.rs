//! `cases.csv` and `summary.csv` on disk, written and read with the `csv`
//! crate (RFC 4180: a field holding a comma, quote or newline is quoted), so
//! whatever a name or label holds, `mcblast report` reads back the fields
//! `mcblast run` wrote.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// A CSV file being written: each row is flushed as soon as it is known,
/// so Ctrl-C keeps every finished row.
pub struct CsvOut {
    w: csv::Writer<File>,
    path: String,
}

impl CsvOut {
    /// Creates (truncates) `path` and writes its header.
    pub fn create(path: &Path, header: &[String]) -> Result<CsvOut> {
        let w = csv::Writer::from_path(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = CsvOut { w, path: path.display().to_string() };
        out.row(header)?;
        Ok(out)
    }

    /// Writes one row and flushes it.
    pub fn row(&mut self, fields: &[String]) -> Result<()> {
        self.w.write_record(fields).with_context(|| format!("writing {}", self.path))?;
        self.w.flush().with_context(|| format!("writing {}", self.path))
    }
}

/// A CSV file with a header line: (header, rows). Every row must have the
/// header's number of fields; blank lines are skipped.
pub fn read(path: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .with_context(|| format!("reading {}", path.display()))?;
    let header: Vec<String> = r.headers().with_context(|| format!("reading {}", path.display()))?.iter().map(String::from).collect();
    if header.iter().all(String::is_empty) {
        anyhow::bail!("{} is empty (no header line)", path.display());
    }
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.with_context(|| format!("{}: not a CSV row with the header's {} fields", path.display(), header.len()))?;
            Ok(rec.iter().map(String::from).collect())
        })
        .collect::<Result<_>>()?;
    Ok((header, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commas_quotes_and_newlines_round_trip() {
        let dir = std::env::temp_dir().join(format!("mcblast-csvfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.csv");
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let header = s(&["case", "receiver", "note"]);
        let rows = vec![
            s(&["1", "r1,eu", "say \"hi\""]),
            s(&["2", "two\nlines", "crlf\r\nand \"both\", here"]),
            s(&["3", "", " lead and trail "]),
        ];
        let mut w = CsvOut::create(&p, &header).unwrap();
        for r in &rows {
            w.row(r).unwrap();
        }
        drop(w);
        let back = read(&p);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back.unwrap(), (header, rows));
    }

    #[test]
    fn a_short_row_or_an_empty_file_is_an_error() {
        let dir = std::env::temp_dir().join(format!("mcblast-csvfile-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (short, empty) = (dir.join("short.csv"), dir.join("empty.csv"));
        std::fs::write(&short, "a,b\n1,2\n3\n").unwrap();
        std::fs::write(&empty, "").unwrap();
        let (e1, e2) = (read(&short).unwrap_err(), read(&empty).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(format!("{e1:#}").contains("short.csv: not a CSV row with the header's 2 fields"), "{e1:#}");
        assert!(e2.to_string().contains("is empty (no header line)"), "{e2}");
    }
}
