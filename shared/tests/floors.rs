//! The crate's modules stand on floors, and an import may only point down a floor or along
//! one, never up; and no two modules import each other, directly or round a circle. This
//! test reads `shared/src`, finds every `crate::` and `super::` path outside comments, and
//! fails on an import that breaks either rule, naming the file and the import.
//!
//! The floors are written down once, in the table of `lib.rs`'s tour (`//! | floor | modules |`):
//! this test reads them from there, so the tour and the check cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `shared/src` and its floor, read from the table in `lib.rs`'s
/// tour: rows `//! | N | modules |`, where every module is named in backticks.
fn floors() -> Vec<(String, u8)> {
    let tour = std::fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let mut floors = Vec::new();
    for line in tour.lines() {
        let Some(row) = line.strip_prefix("//! |") else {
            continue;
        };
        let mut cells = row.split('|');
        let (Some(floor), Some(modules)) = (cells.next(), cells.next()) else {
            continue;
        };
        let Ok(floor) = floor.trim().parse::<u8>() else {
            continue;
        };
        for name in modules.split('`').skip(1).step_by(2) {
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                floors.push((name.to_owned(), floor));
            }
        }
    }
    assert!(!floors.is_empty(), "no floors table in lib.rs's tour");
    floors
}

/// A module path such as `["store", "writer"]`.
type Module = Vec<String>;

/// One import: the file it is in, the module that file is, and the module it names.
#[derive(Debug, Clone)]
struct Import {
    file: PathBuf,
    from: Module,
    to: Module,
    text: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module file under `src` and the module it is (`lib.rs` is the root, `[]`).
fn module_files(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut files = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap().with_extension("");
            let mut module: Module = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            files.insert(module, path);
        }
    }
    files
}

/// The source without comments, string and char literals (their text is not an import).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && (next == Some('"') || next == Some('#')) && is_raw_string(&chars, i) {
            i = skip_raw_string(&chars, i);
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' && is_char_literal(&chars, i) {
            i = skip_char_literal(&chars, i);
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_raw_string(chars: &[char], i: usize) -> bool {
    // `r"…"` or `r#"…"#`, not an identifier ending in r.
    let starts_word = i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
    let mut j = i + 1;
    while chars.get(j) == Some(&'#') {
        j += 1;
    }
    starts_word && chars.get(j) == Some(&'"')
}

fn skip_raw_string(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    let mut hashes = 0;
    while chars[j] == '#' {
        hashes += 1;
        j += 1;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && (0..hashes).all(|k| chars.get(j + 1 + k) == Some(&'#')) {
            return j + 1 + hashes;
        }
        j += 1;
    }
    j
}

/// `'a'`, `'\n'`, `'\u{1F600}'`, not a lifetime such as `'a`.
fn is_char_literal(chars: &[char], i: usize) -> bool {
    match chars.get(i + 1) {
        Some('\\') => true,
        Some(_) => chars.get(i + 2) == Some(&'\''),
        None => false,
    }
}

fn skip_char_literal(chars: &[char], i: usize) -> usize {
    let mut j = i + 1;
    if chars[j] == '\\' {
        j += 2;
    } else {
        j += 1;
    }
    while j < chars.len() && chars[j] != '\'' {
        j += 1;
    }
    j + 1
}

/// The paths a piece of code names after `crate::`, `super::` (resolved from `module`), with
/// `use` groups (`crate::{a::b, c}`) expanded; each as written, for the message.
fn named_paths(code: &str, module: &Module) -> Vec<(Module, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            from = start + anchor.len();
            let preceded_by_path = start > 0
                && (bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || (start >= 2 && &code[start - 2..start] == "::"));
            if preceded_by_path {
                continue;
            }
            let mut base: Module = if anchor == "crate::" {
                Vec::new()
            } else {
                let mut parent = module.clone();
                parent.pop();
                parent
            };
            // `super::super::…`
            let mut rest = &code[from..];
            while let Some(more) = rest.strip_prefix("super::") {
                base.pop();
                rest = more;
            }
            for path in expand(rest) {
                let mut full = base.clone();
                full.extend(path.iter().cloned());
                let written = format!("{}{}", anchor, path.join("::"));
                found.push((full, written));
            }
        }
    }
    found
}

/// The paths at the start of `rest`: `a::b::C` or a group `{a::b, c::{d, e}}`.
fn expand(rest: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut text = rest.trim_start();
    loop {
        if let Some(group) = text.strip_prefix('{') {
            let inner = &group[..closing_brace(group)];
            return split_top_level(inner)
                .into_iter()
                .flat_map(expand)
                .map(|tail| {
                    let mut path = segments.clone();
                    path.extend(tail);
                    path
                })
                .collect();
        }
        let end = text
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(text.len());
        if end == 0 {
            break;
        }
        segments.push(text[..end].to_owned());
        text = &text[end..];
        match text.strip_prefix("::") {
            Some(more) => text = more.trim_start(),
            None => break,
        }
    }
    vec![segments]
}

fn closing_brace(text: &str) -> usize {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    text.len()
}

fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// The longest module that `path` starts with (a path names items inside modules).
fn module_of(path: &Module, modules: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
        .unwrap_or_default()
}

/// Every import between two different modules of the crate, neither inside the other.
fn imports() -> Vec<Import> {
    let src = src_dir();
    let files = module_files(&src);
    let modules: BTreeSet<Module> = files.keys().cloned().collect();
    let mut imports = Vec::new();
    for (module, file) in &files {
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        for (path, text) in named_paths(&code, module) {
            let to = module_of(&path, &modules);
            if to.starts_with(module) || module.starts_with(&to) {
                continue;
            }
            imports.push(Import {
                file: file.strip_prefix(&src).unwrap().to_path_buf(),
                from: module.clone(),
                to,
                text,
            });
        }
    }
    imports
}

fn floor_of(module: &Module, floors: &[(String, u8)]) -> Option<u8> {
    let top = module.first()?;
    floors
        .iter()
        .find(|(name, _)| name == top)
        .map(|(_, floor)| *floor)
}

/// Imports that point up a floor (or into a module the table does not place).
fn upward(imports: &[Import], floors: &[(String, u8)]) -> Vec<String> {
    let mut found = BTreeSet::new();
    for import in imports {
        let (Some(from), Some(to)) = (floor_of(&import.from, floors), floor_of(&import.to, floors))
        else {
            found.insert(format!(
                "{}: `{}` — a module with no floor in lib.rs's table ({} or {})",
                import.file.display(),
                import.text,
                import.from.join("::"),
                import.to.join("::"),
            ));
            continue;
        };
        if to > from {
            found.insert(format!(
                "{}: `{}` points up from floor {from} ({}) to floor {to} ({})",
                import.file.display(),
                import.text,
                import.from[0],
                import.to[0],
            ));
        }
    }
    found.into_iter().collect()
}

/// The edge an import makes between siblings: the two children of the deepest module that
/// holds both ends (`web::pages → web::auth` is an edge between `pages` and `auth` in `web`).
fn sibling_edge(import: &Import) -> (Module, Module) {
    let common = import
        .from
        .iter()
        .zip(&import.to)
        .take_while(|(a, b)| a == b)
        .count();
    (
        import.from[..=common].to_vec(),
        import.to[..=common].to_vec(),
    )
}

/// Circles among sibling modules, each as the modules round it and an import on each edge.
fn circles(imports: &[Import]) -> Vec<String> {
    let mut edges: BTreeMap<Module, BTreeMap<Module, &Import>> = BTreeMap::new();
    for import in imports {
        let (from, to) = sibling_edge(import);
        edges.entry(from).or_default().entry(to).or_insert(import);
    }
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first from `start`, looking for a way back to it.
        let mut stack: Vec<(Module, Vec<Module>)> = vec![(start.clone(), vec![start.clone()])];
        let mut visited = BTreeSet::new();
        while let Some((at, trail)) = stack.pop() {
            for next in edges.get(&at).into_iter().flat_map(|e| e.keys()) {
                if next == start {
                    let mut round = trail.clone();
                    round.push(start.clone());
                    let steps: Vec<String> = round
                        .windows(2)
                        .map(|pair| {
                            let import = edges[&pair[0]][&pair[1]];
                            format!("{} (`{}`)", import.file.display(), import.text)
                        })
                        .collect();
                    // The same circle found from each of its modules is reported once.
                    let mut key: Vec<String> = trail.iter().map(|m| m.join("::")).collect();
                    key.sort();
                    found.insert((
                        key,
                        format!(
                            "{}: {}",
                            round
                                .iter()
                                .map(|m| m.join("::"))
                                .collect::<Vec<_>>()
                                .join(" → "),
                            steps.join(", ")
                        ),
                    ));
                } else if visited.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    let mut seen = BTreeSet::new();
    found
        .into_iter()
        .filter(|(key, _)| seen.insert(key.clone()))
        .map(|(_, text)| text)
        .collect()
}

#[test]
fn no_import_points_up_a_floor() {
    let upward = upward(&imports(), &floors());
    assert!(
        upward.is_empty(),
        "imports pointing up a floor (see the table in lib.rs's tour):\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_modules_import_each_other_round_a_circle() {
    let circles = circles(&imports());
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn every_top_level_module_has_a_floor() {
    let files = module_files(&src_dir());
    let floors = floors();
    let unplaced: BTreeSet<&String> = files
        .keys()
        .filter_map(|m| m.first())
        .filter(|top| !floors.iter().any(|(name, _)| name == *top))
        .collect();
    assert!(unplaced.is_empty(), "modules with no floor: {unplaced:?}");
}

/// The reader itself: it must see the imports a test of it would miss otherwise.
#[test]
fn the_reader_finds_grouped_nested_and_super_imports_and_skips_comments_and_strings() {
    let module: Module = vec!["web".into(), "pages".into()];
    let code = code_only(
        "use crate::{store::{accounts::User, now_ms}, app::App};\n\
         // use crate::poll::Poller;\n\
         /* crate::health */ let s = \"crate::metrics\"; let c = '\"';\n\
         use super::auth::login; let x = crate::tokens::load(); let l: &'a str = r#\"crate::x\"#;",
    );
    let mut paths: Vec<String> = named_paths(&code, &module)
        .into_iter()
        .map(|(path, _)| path.join("::"))
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "app::App",
            "store::accounts::User",
            "store::now_ms",
            "tokens::load",
            "web::auth::login",
        ]
    );
}

#[test]
fn a_circle_and_an_upward_import_are_reported() {
    let import = |from: &[&str], to: &[&str]| Import {
        file: PathBuf::from(format!("{}.rs", from.join("/"))),
        from: from.iter().map(|s| s.to_string()).collect(),
        to: to.iter().map(|s| s.to_string()).collect(),
        text: format!("crate::{}", to.join("::")),
    };
    let imports = [
        import(&["store", "tokens"], &["tokens"]),
        import(&["web", "pages"], &["web", "donationalerts"]),
        import(&["web", "donationalerts"], &["web", "pages"]),
    ];
    let floors: Vec<(String, u8)> = [("store", 2), ("tokens", 4), ("web", 6)]
        .map(|(name, floor)| (name.to_owned(), floor))
        .into();
    let upward = upward(&imports, &floors);
    assert_eq!(upward.len(), 1, "{upward:?}");
    assert!(upward[0].contains("store/tokens.rs: `crate::tokens` points up from floor 2"));
    let circles = circles(&imports);
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].starts_with("web::donationalerts → web::pages → web::donationalerts"));
}
