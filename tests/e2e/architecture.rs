//! Architecture invariants of ARCHITECTURE.md that a test can hold: the
//! module graph has no two-way imports and the crate's top-level modules are
//! layered (no cycle), only `server/queue/` writes the `deliveries` table,
//! and only `server/storage/ops_changes.rs` has statements on the
//! `ops_changes` outbox. Read from the sources, so a change that breaks one
//! fails here with the files named.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every module of the server crate, by path (`delivery::worker`; the crate
/// root is ""), with its source stripped of comments and of its unit tests.
fn modules() -> BTreeMap<String, (PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("server");
    let mut found = BTreeMap::new();
    let mut pending = vec![root.clone()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read server/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(&root).expect("under server/");
            let mut segments: Vec<String> = relative
                .with_extension("")
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            if matches!(
                segments.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                segments.pop();
            }
            let source = std::fs::read_to_string(&path).expect("read source");
            found.insert(
                segments.join("::"),
                (path, without_tests(&strip_comments(&source))),
            );
        }
    }
    found
}

/// The source without `//` and `/* */` comments (string literals kept).
fn strip_comments(source: &str) -> String {
    let bytes = source.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut index = 0;
    let mut in_string = false;
    while index < bytes.len() {
        let byte = bytes[index];
        let rest = &bytes[index..];
        if in_string {
            if byte == b'\\' && index + 1 < bytes.len() {
                out.extend_from_slice(&bytes[index..index + 2]);
                index += 2;
                continue;
            }
            out.push(byte);
            in_string = byte != b'"';
            index += 1;
            continue;
        }
        let take = if rest.starts_with(b"r#\"") {
            // A raw string, kept whole whatever quotes it holds.
            (3..rest.len())
                .find(|at| rest[*at..].starts_with(b"\"#"))
                .map_or(rest.len(), |at| at + 2)
        } else if rest.len() > 2 && rest[0] == b'\'' && rest[2] == b'\'' {
            3 // A character literal such as '"'.
        } else if rest.len() > 3 && rest[0] == b'\'' && rest[1] == b'\\' && rest[3] == b'\'' {
            4
        } else {
            0
        };
        if take > 0 {
            out.extend_from_slice(&rest[..take]);
            index += take;
            continue;
        }
        if rest.starts_with(b"//") {
            while index < bytes.len() && bytes[index] != b'\n' {
                index += 1;
            }
            continue;
        }
        if rest.starts_with(b"/*") {
            index += 2;
            while index < bytes.len() && !bytes[index..].starts_with(b"*/") {
                index += 1;
            }
            index += 2;
            continue;
        }
        in_string = byte == b'"';
        out.push(byte);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unit tests may import anything: the source up to its `#[cfg(test)]`.
fn without_tests(source: &str) -> String {
    match source.find("#[cfg(test)]") {
        Some(at) => source[..at].to_owned(),
        None => source.to_owned(),
    }
}

/// Every path the source names from `crate::`, `super::` or `self::`,
/// with `use` groups expanded (`a::{b, c::d}` gives `a::b`, `a::c::d`).
fn paths(source: &str) -> Vec<String> {
    let bytes = source.as_bytes();
    let mut found = Vec::new();
    let mut index = 0;
    while index < bytes.len() {
        let rest = &bytes[index..];
        let boundary = index == 0
            || !(bytes[index - 1].is_ascii_alphanumeric()
                || bytes[index - 1] == b'_'
                || bytes[index - 1] == b':');
        if boundary
            && (rest.starts_with(b"crate::")
                || rest.starts_with(b"super::")
                || rest.starts_with(b"self::"))
        {
            // An ASCII byte: a character boundary.
            let (tree, used) = path_tree(&source[index..]);
            found.extend(tree);
            index += used.max(1);
        } else {
            index += 1;
        }
    }
    found
}

/// Parses `seg::seg::{…}` at the start of `text`: the paths and the length.
fn path_tree(text: &str) -> (Vec<String>, usize) {
    let bytes = text.as_bytes();
    let mut index = 0;
    let mut prefix = String::new();
    loop {
        let start = index;
        while index < bytes.len() && (bytes[index].is_ascii_alphanumeric() || bytes[index] == b'_')
        {
            index += 1;
        }
        if start == index {
            break;
        }
        if !prefix.is_empty() {
            prefix.push_str("::");
        }
        prefix.push_str(&text[start..index]);
        if text[index..].starts_with("::{") {
            index += 3;
            let mut paths = Vec::new();
            loop {
                while index < bytes.len()
                    && (bytes[index] == b' ' || bytes[index] == b'\n' || bytes[index] == b',')
                {
                    index += 1;
                }
                if index >= bytes.len() || bytes[index] == b'}' {
                    index += 1;
                    break;
                }
                let (inner, used) = path_tree(&text[index..]);
                for path in inner {
                    paths.push(if path == "self" {
                        prefix.clone()
                    } else {
                        format!("{prefix}::{path}")
                    });
                }
                index += used.max(1);
                // Skip `as name`.
                while index < bytes.len() && bytes[index] != b',' && bytes[index] != b'}' {
                    index += 1;
                }
            }
            return (paths, index);
        }
        if text[index..].starts_with("::") {
            index += 2;
        } else {
            break;
        }
    }
    (vec![prefix], index)
}

/// The module a path names (its longest prefix that is a module), seen
/// from module `from`.
fn resolve(
    from: &str,
    path: &str,
    modules: &BTreeMap<String, (PathBuf, String)>,
) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = if from.is_empty() {
        Vec::new()
    } else {
        from.split("::").collect()
    };
    match segments.first().copied() {
        Some("crate") => {
            base.clear();
            segments.remove(0);
        }
        Some("self") => {
            segments.remove(0);
        }
        Some("super") => {
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
        }
        _ => return None,
    }
    (0..=segments.len()).rev().find_map(|take| {
        let candidate = base
            .iter()
            .chain(segments[..take].iter())
            .copied()
            .collect::<Vec<_>>()
            .join("::");
        modules.contains_key(&candidate).then_some(candidate)
    })
}

fn nested(a: &str, b: &str) -> bool {
    a.is_empty()
        || b.is_empty()
        || a.starts_with(&format!("{b}::"))
        || b.starts_with(&format!("{a}::"))
}

fn edges(modules: &BTreeMap<String, (PathBuf, String)>) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, (_, source)) in modules {
        for path in paths(source) {
            if let Some(target) = resolve(module, &path, modules)
                && target != *module
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let modules = modules();
    let edges = edges(&modules);
    let mut two_way = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            // A module and its own submodules form one unit (a parent
            // declares its children; they build on its items).
            if from < to
                && !nested(from, to)
                && edges.get(to).is_some_and(|back| back.contains(from))
            {
                two_way.push(format!("{from} <-> {to}"));
            }
        }
    }
    assert!(
        two_way.is_empty(),
        "modules that import each other: {two_way:?}"
    );
    assert!(edges.len() > 20, "the parser found the imports: {edges:?}");
}

#[test]
fn the_top_level_modules_are_layered() {
    let modules = modules();
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, targets) in edges(&modules) {
        let top = |module: &str| module.split("::").next().unwrap_or_default().to_owned();
        for to in targets {
            let (a, b) = (top(&from), top(&to));
            if !a.is_empty() && !b.is_empty() && a != b {
                layers.entry(a).or_default().insert(b);
            }
        }
    }
    // Depth-first search for a cycle.
    fn visit(
        node: &str,
        layers: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in layers.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, layers, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in layers.keys() {
        let cycle = visit(node, &layers, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "top-level modules in a cycle: {cycle:?}");
    }
    assert!(layers.get("queue").is_some_and(|l| l.contains("storage")));
}

#[test]
fn only_the_queue_writes_deliveries() {
    let writes = [
        "UPDATE deliveries",
        "INSERT INTO deliveries",
        "delivery::ActiveModel",
        "delivery::Entity::update",
        "delivery::Entity::insert",
        "Deliveries::update",
        "Deliveries::insert",
    ];
    let mut offenders = Vec::new();
    let mut queue_writes = 0;
    for (module, (path, source)) in modules() {
        for write in writes {
            let count = source.matches(write).count();
            if module == "queue" || module.starts_with("queue::") {
                queue_writes += count;
            } else if count > 0 {
                offenders.push(format!("{} ({write})", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "deliveries written outside the queue: {offenders:?}"
    );
    assert!(
        queue_writes > 10,
        "the queue's own writes were found ({queue_writes})"
    );
}

#[test]
fn only_the_outbox_module_has_statements_on_ops_changes() {
    let statements = [
        "INSERT INTO ops_changes",
        "UPDATE ops_changes",
        "DELETE FROM ops_changes",
        "FROM ops_changes",
    ];
    let mut offenders = Vec::new();
    let mut own = 0;
    for (module, (path, source)) in modules() {
        for statement in statements {
            let count = source.matches(statement).count();
            if module == "storage::ops_changes" {
                own += count;
            } else if count > 0 {
                offenders.push(format!("{} ({statement})", path.display()));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "ops_changes touched outside storage/ops_changes.rs: {offenders:?}"
    );
    assert!(own >= 5, "the outbox's own statements were found ({own})");
}
