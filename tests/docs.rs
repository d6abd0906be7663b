//! The documentation's links: every relative link in the README, the
//! changelog, `docs/` and the chart's README names a file that exists, and
//! every `#anchor` a heading of the file it points into (GitHub's slugs).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files that are the project's documentation.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md"), root().join("CHANGELOG.md")];
    let mut stack = vec![root().join("docs"), root().join("deploy")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out
}

/// The text outside code fences and inline code.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if fence {
            continue;
        }
        let mut code = false;
        for part in line.split('`') {
            if !code {
                out.push_str(part);
            }
            code = !code;
        }
        out.push('\n');
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces
/// as hyphens; a repeated heading gets `-1`, `-2`, ….
fn anchors(text: &str) -> HashSet<String> {
    let mut seen = HashSet::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        }
        if fence || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while !seen.insert(candidate.clone()) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
    }
    seen
}

/// `(line, target)` of every inline link `[text](target)`.
fn links(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in prose(text).lines().enumerate() {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let Some(end) = after.find(')') else { break };
            out.push((i + 1, after[..end].trim().to_string()));
            rest = &after[end..];
        }
    }
    out
}

/// `(line, target, why)` of each link in `doc` that does not resolve.
fn broken_links(doc: &Path) -> Vec<(usize, String, &'static str)> {
    let text = std::fs::read_to_string(doc).unwrap();
    let mut broken = Vec::new();
    for (line, target) in links(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (file, anchor) = match target.split_once('#') {
            Some((f, a)) => (f, Some(a)),
            None => (target.as_str(), None),
        };
        let path = if file.is_empty() { doc.to_path_buf() } else { doc.parent().unwrap().join(file) };
        if !path.exists() {
            broken.push((line, target, "no such file"));
        } else if let Some(anchor) = anchor
            && path.extension().is_some_and(|e| e == "md")
            && !anchors(&std::fs::read_to_string(&path).unwrap()).contains(anchor)
        {
            broken.push((line, target, "no heading with that anchor"));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let docs = documents();
    assert!(docs.len() >= 10, "the docs were found: {docs:?}");
    let mut failures = Vec::new();
    for doc in &docs {
        let name = doc.strip_prefix(root()).unwrap().display().to_string();
        for (line, target, why) in broken_links(doc) {
            failures.push(format!("{name}:{line}: {target}: {why}"));
        }
    }
    assert!(failures.is_empty(), "broken links:\n{}", failures.join("\n"));
}

#[test]
fn the_link_checker_finds_a_broken_file_and_a_broken_anchor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.md"), "# B\n\n## The `x` part (two)\n\n## B\n").unwrap();
    let a = dir.path().join("a.md");
    let text =
        "[ok](b.md#the-x-part-two) [gone](c.md) [bad](b.md#nope) `[code](d.md)`\n\n[again](b.md#b-1) [self](#top)\n";
    std::fs::write(&a, text).unwrap();
    let broken: Vec<(usize, String)> = broken_links(&a).into_iter().map(|(l, t, _)| (l, t)).collect();
    assert_eq!(broken, [(1, "c.md".to_string()), (1, "b.md#nope".to_string()), (3, "#top".to_string())]);
}

/// The README stays a newcomer's read.
#[test]
fn the_readme_stays_short() {
    let lines = std::fs::read_to_string(root().join("README.md")).unwrap().lines().count();
    assert!(lines <= 420, "README.md is {lines} lines; move detail to docs/");
}

/// The `hourglass-*` crates a manifest's `[dependencies]` name.
fn manifest_imports(manifest: &Path) -> std::collections::BTreeSet<String> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let deps = text.split("\n[dependencies]\n").nth(1).unwrap_or_default();
    let deps = deps.split("\n[").next().unwrap_or_default();
    deps.lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|name| name.starts_with("hourglass-"))
        .map(String::from)
        .collect()
}

/// docs/ARCHITECTURE.md's crate table says what each crate imports; the
/// manifests are the truth, and the two agree.
#[test]
fn the_architectures_crate_map_is_the_manifests() {
    let text = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let rows: Vec<(String, String, String)> = text
        .lines()
        .filter(|l| l.starts_with("| `hourglass"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let name = cells[0].split('`').nth(1).unwrap().to_string();
            let dir = cells[0].split('`').nth(3).unwrap().trim_end_matches('/').to_string();
            (name, dir, cells.last().unwrap().to_string())
        })
        .collect();
    let members = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    for (_, dir, _) in rows.iter().filter(|(n, _, _)| n != "hourglass") {
        assert!(members.contains(&format!("\"{dir}\"")), "{dir} is a workspace member");
    }
    assert!(rows.len() >= 9, "{rows:?}");
    for (name, dir, imports) in &rows {
        let manifest = if dir == "src" { root().join("Cargo.toml") } else { root().join(dir).join("Cargo.toml") };
        let want: std::collections::BTreeSet<String> = match imports.as_str() {
            "nothing of ours" => Default::default(),
            list => list.split(", ").map(|c| format!("hourglass-{c}")).collect(),
        };
        assert_eq!(manifest_imports(&manifest), want, "{name}: ARCHITECTURE.md says it imports {imports}");
    }
}
