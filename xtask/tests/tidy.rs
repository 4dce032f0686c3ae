//! Tidy: the structural rules of `ARCHITECTURE.md`, checked on every
//! `cargo test --workspace` (as rust-analyzer's `xtask/tests/tidy.rs` does).
//!
//! - crates depend on each other only in the documented direction
//!   (core ← keycloak ← server ← cli/app; client ← cli/app; login ← cli/app);
//! - `jit-core` does no I/O and never reads the clock;
//! - public items of the library crates carry a doc comment;
//! - every path named in ARCHITECTURE.md's code map exists.
//!
//! Plain text scans, no parser: a rule that needs one is not a tidy rule.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// The checkout this run is for: `CARGO_MANIFEST_DIR` as `cargo test`
/// sets it (a binary shared through one target dir may have another
/// checkout's path built in).
fn root() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .parent()
    .expect("xtask lives in the workspace root")
    .to_path_buf()
}

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// All `.rs` files under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("list {}: {e}", d.display())) {
            let p = e.expect("dir entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

// ---------------------------------------------------------------------------
// Dependency direction

/// Workspace crates (package name, manifest dir) and which other workspace
/// crates each may depend on. `None`: anything (end-to-end test crates).
/// The source of this table is ARCHITECTURE.md ("Direction: …" and the code
/// map's last column); `architecture_states_the_direction` keeps the two
/// together.
const LAYERS: &[(&str, &str, Option<&[&str]>)] = &[
    ("jit-core", "crates/jit-core", Some(&[])),
    ("jit-keycloak", "crates/jit-keycloak", Some(&["jit-core"])),
    (
        "jit-server",
        "crates/jit-server",
        Some(&["jit-core", "jit-keycloak"]),
    ),
    ("jit-client", "crates/jit-client", Some(&["jit-core"])),
    ("jit-login", "crates/jit-login", Some(&[])),
    (
        "jit-cli",
        "crates/jit-cli",
        Some(&["jit-core", "jit-client", "jit-login"]),
    ),
    (
        "jit-desktop",
        "src-tauri",
        Some(&["jit-core", "jit-client", "jit-login", "jit-server"]),
    ),
    ("jit-testkit", "crates/jit-testkit", Some(&[])),
    ("jit-desktop-webext", "crates/jit-desktop-webext", Some(&[])),
    ("xtask", "xtask", Some(&["jit-testkit"])),
    ("jit-e2e", "tests", None),
    ("jit-desktop-e2e", "tests/desktop", None),
];

/// Test-only leaf crates (they depend on no other workspace crate, so no
/// arrow through them can point the wrong way): any crate may use them in
/// `[dev-dependencies]`.
const TEST_ONLY: &[&str] = &["jit-testkit"];

/// Crates `jit-core` must never pull in: they do I/O or keep time.
const CORE_FORBIDDEN_DEPS: &[&str] = &[
    "tokio",
    "reqwest",
    "hyper",
    "axum",
    "rusqlite",
    "tokio-postgres",
    "sqlx",
    "postgres",
    "async-std",
    "futures",
    "dirs",
    "webbrowser",
    "keyring",
    "tracing",
    "tauri",
    "oauth2",
    "jsonwebtoken",
    "uuid",
    "fastrand",
    "rand",
];

/// Dependency names of a Cargo.toml: every table whose header ends in
/// `dependencies` (normal, dev, build, target-specific), both `name = …`
/// lines and `[dependencies.name]` headers.
fn manifest_deps(toml: &str) -> BTreeSet<String> {
    manifest_deps_split(toml)
        .into_iter()
        .map(|(n, _)| n)
        .collect()
}

/// As [`manifest_deps`], each name with whether it comes from a
/// `dev-dependencies` table (and from no other).
fn manifest_deps_split(toml: &str) -> BTreeSet<(String, bool)> {
    let mut deps = BTreeSet::<(String, bool)>::new();
    let mut in_deps = false;
    let mut dev = false;
    for line in toml.lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_end_matches(']').trim();
            in_deps = h.ends_with("dependencies");
            dev = h.ends_with("dev-dependencies");
            if let Some((table, name)) = h.rsplit_once('.') {
                if table.ends_with("dependencies") {
                    deps.insert((
                        name.trim_matches('"').to_string(),
                        table.ends_with("dev-dependencies"),
                    ));
                }
            }
            continue;
        }
        if !in_deps || t.is_empty() || t.starts_with('#') {
            continue;
        }
        if let Some((key, _)) = t.split_once('=') {
            let name = key.trim().split('.').next().unwrap_or("").trim_matches('"');
            if !name.is_empty() {
                deps.insert((name.to_string(), dev));
            }
        }
    }
    // A name also used outside dev-dependencies counts as a normal one.
    let normal: BTreeSet<String> = deps
        .iter()
        .filter(|(_, d)| !d)
        .map(|(n, _)| n.clone())
        .collect();
    deps.into_iter()
        .filter(|(n, d)| !d || !normal.contains(n))
        .collect()
}

fn manifest_name(toml: &str) -> Option<String> {
    let mut in_package = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_package = t == "[package]";
        } else if in_package {
            if let Some(v) = t.strip_prefix("name") {
                let v = v.trim_start();
                if let Some(v) = v.strip_prefix('=') {
                    return Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// The workspace members of the root Cargo.toml.
fn workspace_members() -> Vec<String> {
    let toml = read(&root().join("Cargo.toml"));
    let start = toml.find("members").expect("[workspace] members");
    let list = &toml[start..];
    let list = &list[list.find('[').expect("members = [")..list.find(']').expect("]")];
    list.split(',')
        .map(|s| {
            s.trim()
                .trim_matches(|c| c == '[' || c == '"' || c == '\n')
                .trim()
        })
        .map(|s| s.trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[test]
fn crates_depend_in_the_documented_direction() {
    let members = workspace_members();
    let mut problems = Vec::new();
    // Every member is in the table, under its real package name, so a new
    // crate has to take a place in the layering.
    for m in &members {
        let name = manifest_name(&read(&root().join(m).join("Cargo.toml")))
            .unwrap_or_else(|| panic!("{m}/Cargo.toml has no [package] name"));
        match LAYERS.iter().find(|(_, dir, _)| dir == m) {
            Some((n, _, _)) if *n == name => {}
            Some((n, _, _)) => problems.push(format!("{m}: package is `{name}`, tidy knows it as `{n}`")),
            None => problems.push(format!(
                "{m} (`{name}`) is not placed in the layering: add it to ARCHITECTURE.md's code map and to LAYERS in xtask/tests/tidy.rs"
            )),
        }
    }
    let workspace: BTreeSet<&str> = LAYERS.iter().map(|(n, _, _)| *n).collect();
    for (name, dir, allowed) in LAYERS {
        let split = manifest_deps_split(&read(&root().join(dir).join("Cargo.toml")));
        let deps: BTreeSet<String> = split.iter().map(|(n, _)| n.clone()).collect();
        if let Some(allowed) = allowed {
            for (d, dev) in split.iter().filter(|(d, _)| workspace.contains(d.as_str())) {
                let test_only = *dev && TEST_ONLY.contains(&d.as_str());
                if !allowed.contains(&d.as_str()) && !test_only {
                    problems.push(format!(
                        "{dir}/Cargo.toml: `{name}` depends on `{d}`, against ARCHITECTURE.md's direction (may use: {allowed:?})"
                    ));
                }
            }
        }
        if *name == "jit-core" {
            for d in deps
                .iter()
                .filter(|d| CORE_FORBIDDEN_DEPS.contains(&d.as_str()))
            {
                problems.push(format!(
                    "{dir}/Cargo.toml: jit-core depends on `{d}`; jit-core does no I/O and keeps no time"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "dependency direction:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn architecture_states_the_direction() {
    let arch = read(&root().join("ARCHITECTURE.md"));
    let flat = arch.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains("core ← keycloak ← server ← cli/app; client ← cli/app; login ← cli/app"),
        "ARCHITECTURE.md no longer states the direction LAYERS in xtask/tests/tidy.rs enforces; change both together"
    );
}

#[test]
fn manifest_deps_sees_every_form() {
    let toml = "[package]\nname = \"x\"\n[dependencies]\na.workspace = true\nb = \"1\"\n\"c\" = { path = \"..\" }\n\n[dev-dependencies]\nd = \"1\"\n[target.'cfg(unix)'.dependencies]\ne = \"1\"\n[dependencies.f]\nversion = \"1\"\n[features]\ng = []\n";
    let got: Vec<String> = manifest_deps(toml).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "d", "e", "f"]);
    let dev: Vec<String> = manifest_deps_split(toml)
        .into_iter()
        .filter(|(_, d)| *d)
        .map(|(n, _)| n)
        .collect();
    assert_eq!(dev, ["d"]);
}

// ---------------------------------------------------------------------------
// jit-core: no I/O, no clock

/// Source text with `#[cfg(test)]` items cut out (brace counting), for rules
/// that hold for shipped code only.
fn without_test_items(src: &str) -> String {
    let mut out = String::new();
    let mut lines = src.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the next item: up to its `;` or its balanced braces.
            let mut depth = 0i32;
            let mut opened = false;
            for l in lines.by_ref() {
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
                if (opened && depth <= 0) || (!opened && l.trim_end().ends_with(';')) {
                    break;
                }
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Things that read the clock or do I/O.
const CORE_FORBIDDEN: &[&str] = &[
    "Utc::now",
    "Local::now",
    "SystemTime",
    "Instant::now",
    "std::time::Instant",
    "std::fs",
    "std::net",
    "std::env",
    "std::process",
    "std::io::stdin",
    "std::io::stdout",
    "tokio",
    "reqwest",
    "rusqlite",
    "println!",
    "eprintln!",
    "File::open",
    "File::create",
];

#[test]
fn jit_core_does_no_io_and_reads_no_clock() {
    let mut problems = Vec::new();
    for f in rust_files(&root().join("crates/jit-core/src")) {
        // `mod tests;` files (declared under #[cfg(test)]) are test code.
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let src = without_test_items(&read(&f));
        for line in src.lines() {
            let code = line.split("//").next().unwrap_or("");
            for pat in CORE_FORBIDDEN {
                if code.contains(pat) {
                    problems.push(format!("{}: `{pat}` in: {}", rel(&f), line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "jit-core reads no clock and does no I/O (`now` is passed in):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn test_items_are_cut() {
    let src = "fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() { Utc::now(); }\n}\nfn c() {}\n#[cfg(test)]\nmod other;\nfn d() {}\n";
    assert_eq!(without_test_items(src), "fn a() {}\nfn c() {}\nfn d() {}\n");
}

// ---------------------------------------------------------------------------
// Doc comments on public items

/// Crates whose public items must say what they are: the libraries, the
/// CLI and the desktop app.
const DOCUMENTED: &[&str] = &[
    "crates/jit-core/src",
    "crates/jit-keycloak/src",
    "crates/jit-server/src",
    "crates/jit-client/src",
    "crates/jit-login/src",
    "crates/jit-cli/src",
    "src-tauri/src",
];

const ITEM_KINDS: &[&str] = &[
    "fn", "struct", "enum", "trait", "mod", "type", "const", "static", "union",
];

/// The kind of public item declared on `line` (`pub` only, not
/// `pub(crate)`), with its name.
fn public_item(line: &str) -> Option<(&'static str, String)> {
    let mut rest = line.trim_start().strip_prefix("pub ")?.trim_start();
    // Qualifiers before the keyword (`const` only when a `fn` follows).
    loop {
        let before = rest;
        for q in ["async ", "unsafe ", "extern \"C\" "] {
            if let Some(r) = rest.strip_prefix(q) {
                rest = r.trim_start();
            }
        }
        if rest.starts_with("const fn") || rest.starts_with("const unsafe fn") {
            rest = rest["const ".len()..].trim_start();
        }
        if rest == before {
            break;
        }
    }
    for kind in ITEM_KINDS {
        if let Some(r) = rest.strip_prefix(kind) {
            if r.starts_with(' ') {
                let name: String = r
                    .trim_start()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                return Some((kind, name));
            }
        }
    }
    None
}

/// `pub mod name;` is documented when `name.rs` or `name/mod.rs` starts
/// with `//!`.
fn module_file_has_inner_doc(file: &Path, name: &str) -> bool {
    let dir = file.parent().expect("file in a dir");
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let base = if ["lib", "main", "mod"].contains(&stem) {
        dir.to_path_buf()
    } else {
        dir.join(stem)
    };
    [
        base.join(format!("{name}.rs")),
        base.join(name).join("mod.rs"),
    ]
    .iter()
    .filter_map(|p| fs::read_to_string(p).ok())
    .any(|s| {
        s.lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("#!["))
            .is_some_and(|l| l.starts_with("//!"))
    })
}

/// Public items without a doc comment in one file's text: a `///` line or
/// `#[doc` attribute before the item, possibly with other attributes
/// (single- or multi-line) and plain comments in between.
fn undocumented(file: &Path, src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut documented = false;
    let mut attr_depth = 0i32;
    let lines: Vec<&str> = src.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim();
        if attr_depth > 0 {
            attr_depth += bracket_balance(t);
            continue;
        }
        if t.starts_with("///") || t.starts_with("#[doc") {
            documented = true;
            if t.starts_with("#[doc") {
                attr_depth = bracket_balance(t).max(0);
            }
            continue;
        }
        if t.starts_with("#[") {
            attr_depth = bracket_balance(t).max(0);
            continue;
        }
        if t.is_empty() || t.starts_with("//") {
            continue;
        }
        if let Some((kind, name)) = public_item(line) {
            let inner_doc = || {
                lines[i + 1..]
                    .iter()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty())
                    .is_some_and(|l| l.starts_with("//!"))
            };
            let ok = documented
                || (kind == "mod" && t.ends_with(';') && module_file_has_inner_doc(file, &name))
                || (kind == "mod" && t.ends_with('{') && inner_doc());
            if !ok {
                out.push(format!("{}:{}: pub {kind} {name}", rel(file), i + 1));
            }
        }
        documented = false;
    }
    out
}

fn bracket_balance(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            '[' => 1,
            ']' => -1,
            _ => 0,
        })
        .sum()
}

#[test]
fn public_items_have_doc_comments() {
    let mut problems = Vec::new();
    for dir in DOCUMENTED {
        for f in rust_files(&root().join(dir)) {
            problems.extend(undocumented(&f, &read(&f)));
        }
    }
    assert!(
        problems.is_empty(),
        "public items without a doc comment (say what it is, its shape, units, errors):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn doc_scan_sees_attributes_and_misses() {
    let src = "/// Doc.\n#[derive(Debug)]\n#[serde(\n    rename_all = \"snake_case\"\n)]\npub struct A;\n\npub fn b() {}\n#[derive(Clone)]\npub enum C {}\n/// Doc.\npub(crate) fn d() {}\npub(crate) fn e() {}\n#[doc = \"x\"]\npub const F: u8 = 1;\n    pub async fn g() {}\n";
    let got = undocumented(Path::new("/nowhere/x.rs"), src);
    let got: Vec<&str> = got.iter().map(|s| s.rsplit(": ").next().unwrap()).collect();
    assert_eq!(got, ["pub fn b", "pub enum C", "pub fn g"]);
}

// ---------------------------------------------------------------------------
// ARCHITECTURE.md's code map names real paths

/// Paths the code map names: every backticked token of a row's first cell
/// outside parentheses (the parentheses hold package names), and backticked
/// tokens elsewhere in the row that look like files (contain `/` and end in
/// an extension).
fn code_map_paths(arch: &str) -> Vec<String> {
    let section = arch
        .split("\n## ")
        .find(|s| s.starts_with("Code map"))
        .expect("ARCHITECTURE.md has a `## Code map` section");
    let mut out = Vec::new();
    for row in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
        let Some(first) = cells.first() else { continue };
        if first.trim() == "path" || first.trim().starts_with("---") {
            continue;
        }
        // First cell, parentheses removed.
        let mut plain = String::new();
        let mut depth = 0;
        for c in first.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ if depth == 0 => plain.push(c),
                _ => {}
            }
        }
        out.extend(backticked(&plain));
        for cell in &cells[1..] {
            // Paths under `target/` are build output (logs, bundles) that a
            // clean checkout does not have: not part of the code map's claim.
            out.extend(backticked(cell).into_iter().filter(|t| {
                t.contains('/')
                    && !t.starts_with("target/")
                    && Path::new(t).extension().is_some()
                    && !t.contains(' ')
                    && !t.contains('|')
            }));
        }
    }
    out
}

fn backticked(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn code_map_paths_exist() {
    let arch = read(&root().join("ARCHITECTURE.md"));
    let paths = code_map_paths(&arch);
    assert!(paths.len() > 10, "code map scan found only {paths:?}");
    let missing: Vec<&String> = paths.iter().filter(|p| !root().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map names paths that do not exist: {missing:?}"
    );
}

// ---------------------------------------------------------------------------
// No circles between the modules of a crate

/// Crates whose top-level modules must not depend on each other in a
/// circle (ARCHITECTURE.md: "arrows point one way"). The crate root
/// (`lib.rs`, `main.rs`) is left out: it declares and wires everything.
const ACYCLIC: &[&str] = &[
    "crates/jit-core/src",
    "crates/jit-login/src",
    "crates/jit-client/src",
    "crates/jit-cli/src",
    "src-tauri/src",
    "crates/jit-server/src",
];

/// The top-level module a file of `src` belongs to (`foo.rs`, `foo/…`),
/// `None` for the crate root.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    (!["lib", "main"].contains(&name.as_str()) || rel.components().count() > 1).then_some(name)
}

/// `module → modules it names as crate::other`, test items left out.
fn module_edges(src: &Path) -> std::collections::BTreeMap<String, BTreeSet<String>> {
    let mut edges = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
    let files = rust_files(src);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    for f in &files {
        let Some(from) = top_module(src, f) else {
            continue;
        };
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = without_test_items(&read(f));
        let out = edges.entry(from.clone()).or_default();
        for line in text.lines() {
            let code = line.split("//").next().unwrap_or("");
            for part in code.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != from && modules.contains(&name) {
                    out.insert(name);
                }
            }
        }
    }
    edges
}

/// One circle of `edges`, as `a → b → a`, if there is one.
fn find_cycle(edges: &std::collections::BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        n: &str,
        edges: &std::collections::BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c.join(" → "));
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn modules_depend_in_one_direction() {
    let mut problems = Vec::new();
    for dir in ACYCLIC {
        if let Some(c) = find_cycle(&module_edges(&root().join(dir))) {
            problems.push(format!("{dir}: {c}"));
        }
    }
    assert!(
        problems.is_empty(),
        "modules in a circle (give the shared piece its own module):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn cycle_search_finds_circles_and_only_them() {
    let edges = |pairs: &[(&str, &str)]| {
        let mut m = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for (a, b) in pairs {
            m.entry(a.to_string()).or_default().insert(b.to_string());
            m.entry(b.to_string()).or_default();
        }
        m
    };
    assert_eq!(
        find_cycle(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])),
        None
    );
    assert_eq!(
        find_cycle(&edges(&[("model", "policy"), ("policy", "model")])).as_deref(),
        Some("model → policy → model")
    );
    assert!(find_cycle(&edges(&[("a", "b"), ("b", "c"), ("c", "a")])).is_some());
}

// ---------------------------------------------------------------------------
// Event kinds are named once

/// Where the event kinds' names are written: `jit_core::api::EventKind`.
const EVENT_KINDS_HOME: &str = "crates/jit-core/src/event.rs";

/// Shipped code that must name event kinds through `EventKind`.
const EVENT_KIND_USERS: &[&str] = &[
    "crates/jit-core/src",
    "crates/jit-keycloak/src",
    "crates/jit-server/src",
    "crates/jit-client/src",
    "crates/jit-login/src",
    "crates/jit-cli/src",
    "src-tauri/src",
];

/// String literals in `code` that look like an event kind:
/// `"request.…"`, `"grant.…"` or `"extension.…"` (lower case and `_`).
fn event_kind_literals(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["request", "grant", "extension"] {
        let start = format!("\"{family}.");
        let mut rest = code;
        while let Some(i) = rest.find(&start) {
            let after = &rest[i + start.len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && after[name.len()..].starts_with('"') {
                out.push(format!("{family}.{name}"));
            }
            rest = after;
        }
    }
    out
}

#[test]
fn event_kinds_are_named_only_in_jit_core() {
    let mut problems = Vec::new();
    for dir in EVENT_KIND_USERS {
        for f in rust_files(&root().join(dir)) {
            if rel(&f) == EVENT_KINDS_HOME || f.file_name().is_some_and(|n| n == "tests.rs") {
                continue;
            }
            for line in without_test_items(&read(&f)).lines() {
                let code = line.split("//").next().unwrap_or("");
                for k in event_kind_literals(code) {
                    problems.push(format!("{}: \"{k}\" in: {}", rel(&f), line.trim()));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "event kinds are jit_core::api::EventKind variants, not strings (its as_str gives the name):\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn event_kind_scan_sees_literals_only() {
    assert_eq!(
        event_kind_literals(r#"x == "grant.kept" || y == "request.voted" "#),
        ["request.voted", "grant.kept"]
    );
    assert!(event_kind_literals(r#"format!("jit.{}", e); "grant.{x}"; "policy.toml""#).is_empty());
}

/// The `pub` fields of `pub struct NAME { … }` in `src`.
fn pub_fields(src: &str, name: &str) -> Vec<String> {
    let Some(start) = src.find(&format!("pub struct {name} {{")) else {
        return vec![format!("no `pub struct {name}`")];
    };
    let body = &src[start..];
    let end = body.find("\n}").unwrap_or(body.len());
    body[..end]
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| l.starts_with("pub ") || l.starts_with("pub("))
        .map(str::to_string)
        .collect()
}

/// "Only the state machine changes a request" is held by the compiler:
/// `AccessRequest` has no public field (getters; stores use
/// `AccessRequest::restore`).
#[test]
fn access_request_fields_stay_private() {
    let model = read(&root().join("crates/jit-core/src/model.rs"));
    let public = pub_fields(&model, "AccessRequest");
    assert!(
        public.is_empty(),
        "AccessRequest's fields are private (read them with getters; change them only in the state machine's methods):\n  {}",
        public.join("\n  ")
    );
    assert_eq!(
        pub_fields("pub struct X {\n    a: u8,\n    pub b: u8,\n}\n", "X"),
        ["pub b: u8,"]
    );
}
