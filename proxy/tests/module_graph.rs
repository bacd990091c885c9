//! The request path has no circles: no module of `proxy/src` uses one that
//! (directly or through others) uses it back. Reads the sources and finds
//! every `crate::<module>` a module names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules it names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let module = relative
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let uses = graph.entry(module.clone()).or_default();
            for (i, _) in text.match_indices("crate::") {
                let name: String = text[i + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    uses.insert(name);
                }
            }
        }
    }
    graph
}

/// The modules reachable from `start`.
fn reachable(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&str> = graph
        .get(start)
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    while let Some(next) = todo.pop() {
        if seen.insert(next.to_owned()) {
            todo.extend(graph.get(next).into_iter().flatten().map(String::as_str));
        }
    }
    seen
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    let graph = module_graph();
    assert!(
        graph.contains_key("forward") && graph.contains_key("dispatch"),
        "{graph:?}"
    );
    let circles: Vec<String> = graph
        .keys()
        .filter(|module| reachable(&graph, module).contains(*module))
        .map(|module| format!("{module} -> {:?}", graph[module]))
        .collect();
    assert!(
        circles.is_empty(),
        "modules in a circle:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_config_and_the_shared_state_sit_below_the_request_path() {
    let graph = module_graph();
    for leaf in ["config", "state", "replay", "codec"] {
        let below = reachable(&graph, leaf);
        for path in ["server", "dispatch", "forward", "tunnel", "upgrade"] {
            assert!(!below.contains(path), "{leaf} reaches {path}: {below:?}");
        }
    }
}
