//! Commands: each takes its flags (`cli`), resolves them into its domain's own
//! plan (the user's words kept apart from what is run) and drives the domain.
//! Only `app` names them all.

pub mod check;
pub mod lab;
pub mod recv;
pub mod report;
pub mod run;
pub mod send;
