//! Reading the CSVs `mcblast run` writes (with the `csv` crate: quoted
//! commas, quotes and newlines are read as the writer meant them).

use std::collections::HashMap;
use std::path::Path;

/// A CSV file as (header, rows of name -> value); every row has the header's fields.
pub fn csv(path: &Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut r = ::csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header: Vec<String> = r.headers().expect("header").iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| {
            let rec = rec.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            header.iter().cloned().zip(rec.iter().map(String::from)).collect()
        })
        .collect();
    (header, rows)
}

/// A column of a row as a number.
pub fn num(r: &HashMap<String, String>, k: &str) -> u64 {
    r[k].parse().unwrap_or_else(|_| panic!("{k} = {:?} in {r:?}", r[k]))
}
