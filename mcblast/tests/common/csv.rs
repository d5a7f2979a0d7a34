//! Reading the CSVs `mcblast run` writes.

use std::collections::HashMap;
use std::path::Path;

/// A CSV file as (header, rows of name -> value).
pub fn csv(path: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().expect("header").split(',').map(String::from).collect();
    let rows = lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), header.len(), "{}: row {l}", path.display());
            header.iter().cloned().zip(f.iter().map(|s| s.to_string())).collect()
        })
        .collect();
    (header, rows)
}

/// A column of a row as a number.
pub fn num(r: &HashMap<String, String>, k: &str) -> u64 {
    r[k].parse().unwrap_or_else(|_| panic!("{k} = {:?} in {r:?}", r[k]))
}
