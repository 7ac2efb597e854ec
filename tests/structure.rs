//! The shape of the source tree, checked: the top-level modules form no cycle, no file holds more
//! than 600 lines of production code, and no production function is longer than 80 lines.
//! Test code (after a file's `#[cfg(test)]`, `*_tests.rs`, the in-process fakes) is left out: a
//! test may reach anywhere, and long tables are fine.

#[cfg(test)]
mod tree {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    const MAX_FILE_LINES: usize = 600;
    const MAX_FN_LINES: usize = 80;

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    fn src() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
    }

    /// Every production source file, with its production text.
    fn production() -> Vec<(String, String)> {
        let mut files = Vec::new();
        sources(&src(), &mut files);
        files.sort();
        files
            .into_iter()
            .filter_map(|path| {
                let rel = path
                    .strip_prefix(src())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                let name = path.file_stem().unwrap().to_string_lossy().into_owned();
                if name.ends_with("_tests") || name.starts_with("fake") {
                    return None;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let prod = match test_module_start(&text) {
                    Some(at) => text[..at].to_string(),
                    None => text,
                };
                Some((rel, prod))
            })
            .collect()
    }

    /// Where the file's test module begins: a `#[cfg(test)]` line followed by a `mod` line.
    fn test_module_start(text: &str) -> Option<usize> {
        text.match_indices("\n#[cfg(test)]\n").find_map(|(at, m)| {
            let next = text[at + m.len()..].lines().next().unwrap_or_default();
            // `mod tests {`, not a declaration such as `mod mock_tests;`.
            (next.contains("mod ") && next.trim_end().ends_with('{')).then_some(at)
        })
    }

    /// `controller/request/mod.rs` → `controller`; `cli.rs` → `cli`.
    fn top_module(rel: &str) -> String {
        rel.split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string()
    }

    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (rel, text) in production() {
            let from = top_module(&rel);
            if from == "main" || from == "lib" {
                continue;
            }
            let deps = edges.entry(from.clone()).or_default();
            // Doc links name other modules without depending on them.
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + "crate::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                // `use crate::{a, b}` lists are not used in this tree; a name is a module or an item
                // of lib.rs, and lib.rs has only modules.
                if !name.is_empty() && name != from {
                    deps.insert(name);
                }
            }
        }
        edges
    }

    fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            edges: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|n| n == node) {
                let mut cycle = path[at..].to_vec();
                cycle.push(node.to_string());
                return Some(cycle);
            }
            if done.contains(node) {
                return None;
            }
            path.push(node.to_string());
            for next in edges.get(node).into_iter().flatten() {
                if let Some(c) = visit(next, edges, path, done) {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(node.to_string());
            None
        }
        let mut done = BTreeSet::new();
        edges
            .keys()
            .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
    }

    #[test]
    fn top_level_modules_form_no_cycle() {
        let edges = graph();
        assert!(edges.contains_key("controller") && edges.contains_key("webhook"));
        if let Some(cycle) = find_cycle(&edges) {
            panic!(
                "module cycle: {}\nall edges: {edges:#?}",
                cycle.join(" -> ")
            );
        }
        // The roles are siblings: none imports another.
        for role in ["controller", "webhook", "agent"] {
            for other in ["controller", "webhook", "agent"] {
                assert!(
                    role == other || !edges[role].contains(other),
                    "{role} imports {other}: move what they share out of both"
                );
            }
        }
        // The pure layers never reach the API machinery.
        for pure in ["step", "pki", "policy", "duration"] {
            for (rel, text) in production() {
                if top_module(&rel) == pure {
                    assert!(!text.contains("kube::"), "{rel} uses kube");
                }
            }
        }
    }

    #[test]
    fn a_cycle_is_found_when_there_is_one() {
        let mut edges = BTreeMap::new();
        edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
        edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
        edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
        assert_eq!(find_cycle(&edges).unwrap(), ["a", "b", "c", "a"]);
        edges.insert("c".to_string(), BTreeSet::new());
        assert_eq!(find_cycle(&edges), None);
    }

    /// Lengths of the functions in `text`: from the `fn` line to its closing brace, comments and
    /// attributes above it left out. Braces inside strings and chars are rare enough in this tree to
    /// be counted; a function that fools the count fails on the side of being too long.
    fn function_lengths(text: &str) -> Vec<(usize, String, usize)> {
        let lines: Vec<&str> = text.lines().collect();
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim_start();
            let is_fn = [
                "fn ",
                "pub fn ",
                "async fn ",
                "pub async fn ",
                "pub(crate) fn ",
                "pub(crate) async fn ",
                "pub(super) fn ",
                "pub(super) async fn ",
                "const fn ",
                "pub const fn ",
            ]
            .iter()
            .any(|p| t.starts_with(p));
            if !is_fn {
                continue;
            }
            let name: String = t
                .split("fn ")
                .nth(1)
                .unwrap_or_default()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let mut depth = 0i32;
            let mut opened = false;
            for (j, l) in lines.iter().enumerate().skip(i) {
                for c in l.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                // A declaration without a body (in a trait) ends at its `;`.
                if !opened && l.trim_end().ends_with(';') {
                    break;
                }
                if opened && depth == 0 {
                    out.push((i + 1, name.clone(), j - i + 1));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn files_and_functions_stay_small() {
        let mut too_big = Vec::new();
        for (rel, text) in production() {
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                too_big.push(format!(
                    "{rel}: {lines} lines of production code (at most {MAX_FILE_LINES})"
                ));
            }
            for (line, name, len) in function_lengths(&text) {
                if len > MAX_FN_LINES {
                    too_big.push(format!(
                        "{rel}:{line} fn {name}: {len} lines (at most {MAX_FN_LINES})"
                    ));
                }
            }
        }
        assert!(too_big.is_empty(), "split these:\n{}", too_big.join("\n"));
    }

    #[test]
    fn function_lengths_count_from_fn_to_its_brace() {
        let text = "/// doc\nfn a() {\n    if x {\n    }\n}\ntrait T {\n    fn b(&self);\n}\npub async fn c(\n    x: u8,\n) -> u8 {\n    x\n}\n";
        let got: Vec<(String, usize)> = function_lengths(text)
            .into_iter()
            .map(|(_, n, l)| (n, l))
            .collect();
        assert_eq!(got, [("a".to_string(), 4), ("c".to_string(), 5)]);
    }
}
