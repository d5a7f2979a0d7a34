//! `cargo xtask docs`: the guide (docs/*.md, README.md and ARCHITECTURE.md)
//! rendered to HTML in target/docs/, one page per file with a sidebar, after
//! checking every relative link: a link to a file that does not exist, or to
//! a heading a Markdown file does not have, fails the build.
//!
//! Links between the pages become links between the HTML pages; links to
//! other files of the repository (examples/, benches/) point at the
//! repository on the web; files in docs/ that are not Markdown (images) are
//! copied. Anchors are GitHub's: a heading's text, lower case, punctuation
//! dropped, spaces as hyphens, `-1`, `-2` … for repeats.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result, bail};
use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};

/// The repository on the web, for links to files that are not pages.
const REPO_URL: &str = "https://github.com/mcblast/mcblast/blob/main";

/// One page of the guide: its source (relative to the workspace root), its
/// HTML file name in target/docs/, its title (the first heading).
struct Page {
    src: String,
    html: String,
    title: String,
    text: String,
}

/// The order of the sidebar; pages not listed follow in name order.
const ORDER: &[&str] = &[
    "docs/index.md",
    "README.md",
    "docs/install.md",
    "docs/kernels.md",
    "docs/send.md",
    "docs/recv.md",
    "docs/attribution.md",
    "docs/check.md",
    "docs/lab.md",
    "docs/run.md",
    "docs/reports.md",
    "docs/json.md",
    "docs/prometheus.md",
    "docs/performance.md",
    "docs/tests.md",
    "docs/troubleshooting.md",
    "ARCHITECTURE.md",
];

pub fn docs(root: &Path) -> Result<PathBuf> {
    let pages = pages(root)?;
    let problems = check_links(root, &pages);
    if !problems.is_empty() {
        bail!("{} broken link(s) in the guide:\n  {}", problems.len(), problems.join("\n  "));
    }
    let out = root.join("target/docs");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for e in std::fs::read_dir(root.join("docs"))? {
        let p = e?.path();
        if p.is_file() && p.extension().is_none_or(|x| x != "md") {
            std::fs::copy(&p, out.join(p.file_name().unwrap()))?;
        }
    }
    let map: HashMap<&str, &str> = pages.iter().map(|p| (p.src.as_str(), p.html.as_str())).collect();
    for p in &pages {
        let body = render(p, &map);
        let file = out.join(&p.html);
        std::fs::write(&file, frame(p, &pages, &body)).with_context(|| format!("cannot write {}", file.display()))?;
    }
    println!("xtask docs: {} pages, every link resolves: {}", pages.len(), out.join("index.html").display());
    Ok(out)
}

fn pages(root: &Path) -> Result<Vec<Page>> {
    let mut srcs: Vec<String> = vec!["README.md".into(), "ARCHITECTURE.md".into()];
    let mut in_docs: Vec<String> = std::fs::read_dir(root.join("docs"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .map(|p| format!("docs/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    in_docs.sort();
    srcs.extend(in_docs);
    srcs.sort_by_key(|s| (ORDER.iter().position(|o| o == s).unwrap_or(ORDER.len()), s.clone()));
    srcs.iter()
        .map(|src| {
            let text = std::fs::read_to_string(root.join(src)).with_context(|| format!("cannot read {src}"))?;
            let html = match src.as_str() {
                "README.md" => "readme.html".to_string(),
                "ARCHITECTURE.md" => "architecture.html".to_string(),
                s => Path::new(s).with_extension("html").file_name().unwrap().to_string_lossy().into_owned(),
            };
            let title = headings(&text).into_iter().next().map(|(_, t)| t).unwrap_or_else(|| src.clone());
            Ok(Page { src: src.clone(), html, title, text })
        })
        .collect()
}

fn options() -> Options {
    Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH
}

/// Every heading of a Markdown text: (anchor, plain text), in order.
pub fn headings(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut current: Option<String> = None;
    for ev in Parser::new_ext(text, options()) {
        match ev {
            Event::Start(Tag::Heading { .. }) => current = Some(String::new()),
            Event::Text(t) | Event::Code(t) => {
                if let Some(c) = current.as_mut() {
                    c.push_str(&t);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                let t = current.take().unwrap_or_default();
                let base = slug(&t);
                let n = seen.entry(base.clone()).or_insert(0);
                let id = if *n == 0 { base.clone() } else { format!("{base}-{n}") };
                *n += 1;
                out.push((id, t));
            }
            _ => {}
        }
    }
    out
}

/// GitHub's anchor for a heading's text.
pub fn slug(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every link and image target of a Markdown text.
fn links(text: &str) -> Vec<String> {
    Parser::new_ext(text, options())
        .filter_map(|ev| match ev {
            Event::Start(Tag::Link { dest_url, .. }) | Event::Start(Tag::Image { dest_url, .. }) => {
                Some(dest_url.to_string())
            }
            _ => None,
        })
        .collect()
}

fn external(url: &str) -> bool {
    url.contains("://") || url.starts_with("mailto:")
}

/// `dir/../x` → `x`, relative to the workspace root; None when it leaves the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Some(out)
}

/// A relative link of `src` split into its target file (relative to the
/// root) and anchor.
fn resolve(src: &str, url: &str) -> Option<(String, Option<String>)> {
    let (path, anchor) = match url.split_once('#') {
        Some((p, a)) => (p, Some(a.to_string())),
        None => (url, None),
    };
    let target = if path.is_empty() {
        PathBuf::from(src)
    } else {
        normalize(&Path::new(src).parent().unwrap_or(Path::new("")).join(path))?
    };
    Some((target.to_string_lossy().trim_end_matches('/').to_string(), anchor))
}

/// Every broken relative link of the pages, as `file: link: why`.
pub fn check_links_in(root: &Path, files: &[(String, String)]) -> Vec<String> {
    let mut anchors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (src, text) in files {
        for url in links(text) {
            if external(&url) {
                continue;
            }
            let Some((target, anchor)) = resolve(src, &url) else {
                problems.push(format!("{src}: {url}: leaves the repository"));
                continue;
            };
            if !root.join(&target).exists() {
                problems.push(format!("{src}: {url}: {target} does not exist"));
                continue;
            }
            let Some(anchor) = anchor else { continue };
            if !target.ends_with(".md") {
                continue;
            }
            let ids = anchors.entry(target.clone()).or_insert_with(|| {
                std::fs::read_to_string(root.join(&target))
                    .map(|t| headings(&t).into_iter().map(|(id, _)| id).collect())
                    .unwrap_or_default()
            });
            if !ids.contains(&anchor) {
                problems.push(format!("{src}: {url}: {target} has no heading #{anchor}"));
            }
        }
    }
    problems
}

fn check_links(root: &Path, pages: &[Page]) -> Vec<String> {
    let files: Vec<(String, String)> = pages.iter().map(|p| (p.src.clone(), p.text.clone())).collect();
    check_links_in(root, &files)
}

/// Where a link of page `src` points in target/docs/.
fn html_target(src: &str, url: &str, map: &HashMap<&str, &str>) -> String {
    if external(url) {
        return url.to_string();
    }
    let Some((target, anchor)) = resolve(src, url) else { return url.to_string() };
    let anchor = anchor.map(|a| format!("#{a}")).unwrap_or_default();
    if let Some(html) = map.get(target.as_str()) {
        if target == src && !anchor.is_empty() {
            return anchor;
        }
        return format!("{html}{anchor}");
    }
    if let Some(rest) = target.strip_prefix("docs/") {
        // Copied next to the pages (images).
        return format!("{rest}{anchor}");
    }
    format!("{REPO_URL}/{target}{anchor}")
}

fn render(p: &Page, map: &HashMap<&str, &str>) -> String {
    let mut ids = headings(&p.text).into_iter().map(|(id, _)| id);
    let events = Parser::new_ext(&p.text, options()).map(|ev| match ev {
        Event::Start(Tag::Heading { level, classes, attrs, .. }) => {
            Event::Start(Tag::Heading { level, id: ids.next().map(Into::into), classes, attrs })
        }
        Event::Start(Tag::Link { link_type, dest_url, title, id }) => {
            let dest_url = html_target(&p.src, &dest_url, map).into();
            Event::Start(Tag::Link { link_type, dest_url, title, id })
        }
        Event::Start(Tag::Image { link_type, dest_url, title, id }) => {
            let dest_url = html_target(&p.src, &dest_url, map).into();
            Event::Start(Tag::Image { link_type, dest_url, title, id })
        }
        ev => ev,
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{margin:0;font:16px/1.5 system-ui,sans-serif;color:#222;display:flex}\
nav{position:sticky;top:0;height:100vh;overflow:auto;min-width:15em;max-width:15em;background:#f4f4f4;padding:1em;box-sizing:border-box;border-right:1px solid #ddd}\
nav a{display:block;color:#235;text-decoration:none;padding:.15em 0}nav a.here{font-weight:bold}\
main{padding:1em 2em;max-width:62em;min-width:0}\
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:13px;line-height:1.4}\
code{font-size:90%;background:#f6f8fa;padding:0 .2em}pre code{padding:0;background:none}\
table{border-collapse:collapse;display:block;overflow:auto;font-size:14px}th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}\
img{max-width:100%}";

fn frame(p: &Page, pages: &[Page], body: &str) -> String {
    let mut nav = String::new();
    for q in pages {
        let class = if q.src == p.src { " class=\"here\"" } else { "" };
        let title = if q.src == "README.md" { "README (front page)".to_string() } else { plain(&q.title) };
        let _ = writeln!(nav, "<a href=\"{}\"{class}>{}</a>", q.html, escape(&title));
    }
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} — mcblast</title><style>{STYLE}</style></head>\n<body><nav><strong>mcblast guide</strong>\n{nav}</nav>\n<main>\n{body}</main></body></html>\n",
        escape(&plain(&p.title))
    )
}

/// A title without Markdown's backticks.
fn plain(t: &str) -> String {
    t.replace('`', "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_githubs() {
        assert_eq!(slug("Fan-out: `mcblast report` over many receivers"), "fan-out-mcblast-report-over-many-receivers");
        assert_eq!(slug("Receiver NIC/driver: `ethtool -S`"), "receiver-nicdriver-ethtool--s");
        assert_eq!(slug("Deploying mcblast: `--deploy`"), "deploying-mcblast---deploy");
        let h = headings("# A\n\n## `x` y\n\n## x y\n");
        assert_eq!(h.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), ["a", "x-y", "x-y-1"]);
    }

    #[test]
    fn broken_links_and_anchors_are_found() {
        let root = crate::root();
        let files = vec![(
            "docs/x.md".to_string(),
            "[a](send.md) [b](send.md#no-such-heading) [c](nope.md) [d](#here) [e](../README.md) \
             [f](https://example.org/) [g](../../outside)\n\n# Here\n"
                .to_string(),
        )];
        // docs/x.md does not exist, so `#here` (same file) is reported missing too.
        let p = check_links_in(&root, &files);
        assert!(p.iter().any(|l| l.contains("no-such-heading")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("nope.md does not exist")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("leaves the repository")), "{p:?}");
        for fine in ["send.md:", "../README.md:", "https://example.org/:"] {
            assert!(!p.iter().any(|l| l.starts_with(&format!("docs/x.md: {fine}"))), "{fine} {p:?}");
        }
    }
}
