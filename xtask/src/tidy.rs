//! `cargo xtask tidy`: conventions checked over the source tree.
//!
//! - Every `.rs` file under `crates/`, `tests/` and `xtask/` starts with a `//!` line.
//! - No text file in the workspace cites an issue number: comments and messages state the fact
//!   itself.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// Folders whose `.rs` files need a `//!` header.
const HEADER_FOLDERS: &[&str] = &["crates", "tests", "xtask"];

/// Folders searched for issue citations, besides the files at the workspace root.
const CITATION_FOLDERS: &[&str] = &["crates", "tests", "xtask", "docs", ".ci", ".cargo"];

/// The citation text, matched without regard to case. It is split so this file does not
/// contain it.
const CITATION: &str = concat!("issue", " #");

/// Folder names never searched: build output and version control.
const SKIPPED_FOLDERS: &[&str] = &["target", ".git"];

/// Runs the checks on the workspace at `root`, printing each problem as `path:line: problem`.
///
/// # Errors
///
/// Returns an error when a check finds a problem or a file cannot be read.
pub fn run(root: &Path) -> anyhow::Result<()> {
    let problems = check(root)?;
    if problems.is_empty() {
        eprintln!("tidy: ok");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!("tidy found {} problems", problems.len())
}

/// Returns every problem in the workspace at `root`, each as `path:line: problem` with the
/// path relative to `root`.
fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();

    for folder in HEADER_FOLDERS {
        for file in files_under(&root.join(folder))? {
            if file.extension().is_some_and(|extension| extension == "rs") {
                problems.extend(check_header(root, &file)?);
            }
        }
    }

    let mut searched = top_level_files(root)?;
    for folder in CITATION_FOLDERS {
        searched.extend(files_under(&root.join(folder))?);
    }
    for file in searched {
        problems.extend(check_citations(root, &file)?);
    }
    Ok(problems)
}

fn check_header(root: &Path, file: &Path) -> anyhow::Result<Option<String>> {
    let text = read(file)?;
    if text
        .lines()
        .next()
        .is_some_and(|line| line.starts_with("//!"))
    {
        return Ok(None);
    }
    Ok(Some(format!(
        "{}:1: missing `//!` header saying what the file is for",
        relative(root, file)
    )))
}

/// Returns a problem for each line of `file` that cites an issue number. Files that are not
/// UTF-8 text are skipped.
fn check_citations(root: &Path, file: &Path) -> anyhow::Result<Vec<String>> {
    let Ok(text) = fs::read_to_string(file) else {
        return Ok(Vec::new());
    };
    let problems = text
        .lines()
        .enumerate()
        .filter(|(_, line)| line.to_lowercase().contains(CITATION))
        .map(|(index, _)| {
            format!(
                "{}:{}: cites an issue number; state the fact instead",
                relative(root, file),
                index + 1
            )
        })
        .collect();
    Ok(problems)
}

/// Lists the files in `folder` and its subfolders, sorted, skipping [`SKIPPED_FOLDERS`]. A
/// missing folder has none.
fn files_under(folder: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![folder.to_owned()];
    while let Some(current) = pending.pop() {
        let entries = match fs::read_dir(&current) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => {
                return Err(error).with_context(|| format!("failed to read {}", current.display()));
            }
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("failed to read {}", current.display()))?;
            let file_type = entry.file_type()?;
            let path = entry.path();
            if file_type.is_dir() && !is_skipped(&path) {
                pending.push(path);
            } else if file_type.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn top_level_files(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        fs::read_dir(root).with_context(|| format!("failed to read {}", root.display()))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to read {}", root.display()))?;
        if entry.file_type()?.is_file() {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn is_skipped(folder: &Path) -> bool {
    folder
        .file_name()
        .is_some_and(|name| SKIPPED_FOLDERS.iter().any(|skipped| name == *skipped))
}

fn read(file: &Path) -> anyhow::Result<String> {
    fs::read_to_string(file).with_context(|| format!("failed to read {}", file.display()))
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates a scratch workspace under the system temporary folder for one test.
    fn scratch(name: &str) -> anyhow::Result<PathBuf> {
        let root = std::env::temp_dir().join(format!("xtask-tidy-{name}-{}", std::process::id()));
        if root.exists() {
            fs::remove_dir_all(&root)?;
        }
        fs::create_dir_all(root.join("crates/demo/src"))?;
        Ok(root)
    }

    #[test]
    fn workspace_is_tidy() -> anyhow::Result<()> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("xtask has no parent folder")?;
        let problems = check(root)?;
        assert!(
            problems.is_empty(),
            "tidy problems:\n{}",
            problems.join("\n")
        );
        Ok(())
    }

    #[test]
    fn file_without_header_is_reported() -> anyhow::Result<()> {
        let root = scratch("header")?;
        fs::write(root.join("crates/demo/src/lib.rs"), "fn main() {}\n")?;
        fs::write(root.join("crates/demo/src/ok.rs"), "//! Fine.\n")?;

        let problems = check(&root)?;
        fs::remove_dir_all(&root)?;

        assert_eq!(
            problems,
            ["crates/demo/src/lib.rs:1: missing `//!` header saying what the file is for"]
        );
        Ok(())
    }

    #[test]
    fn issue_citation_is_reported_with_line() -> anyhow::Result<()> {
        let root = scratch("citation")?;
        let text = format!("//! Fine.\n// see {}12\n", CITATION.to_uppercase());
        fs::write(root.join("crates/demo/src/lib.rs"), text)?;

        let problems = check(&root)?;
        fs::remove_dir_all(&root)?;

        assert_eq!(
            problems,
            ["crates/demo/src/lib.rs:2: cites an issue number; state the fact instead"]
        );
        Ok(())
    }

    #[test]
    fn target_folder_is_skipped() -> anyhow::Result<()> {
        let root = scratch("target")?;
        fs::create_dir_all(root.join("crates/demo/target"))?;
        fs::write(
            root.join("crates/demo/target/generated.rs"),
            "fn main() {}\n",
        )?;

        let problems = check(&root)?;
        fs::remove_dir_all(&root)?;

        assert!(problems.is_empty(), "{problems:?}");
        Ok(())
    }
}
