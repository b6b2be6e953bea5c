//! Getting the two bench executables: the candidate (the working tree) and
//! the base (the merge base, checked out with `git worktree` and built in
//! the same target directory, so only the workspace crates recompile).
//!
//! Two checkouts of one workspace share artifact names in one target
//! directory: cargo hashes a path package by its place in the workspace,
//! not by the checkout, and judges freshness by file times recorded
//! relative to the package. Whichever checkout built last therefore
//! overwrites the other's executable, and cargo then calls that build
//! fresh for both. So every executable the gate runs is first copied out
//! of the target directory ([`keep`]), the base is built before the
//! candidate, and the base's workspace artifacts are removed right after
//! ([`forget_path_packages`]), so the candidate (and any later build in
//! the tree) compiles its own sources.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::count::Listed;

/// A built bench executable and the benchmarks it has.
#[derive(Debug, Clone)]
pub struct BenchExe {
    /// The `hot_path` bench executable.
    pub path: PathBuf,
    /// `--count-list` of that executable.
    pub benches: Vec<Listed>,
    /// Environment for its runs (the planted slowdown's level).
    pub env: Vec<(String, String)>,
    /// What it is, for the report.
    pub label: String,
    /// A hash of its bytes (the key of the tier-1 count cache); `None` if
    /// it could not be read.
    pub digest: Option<u64>,
}

/// A hash of a file's bytes (SipHash with fixed keys: the same in every
/// process).
pub fn digest(path: &Path) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    use std::io::Read;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        buf[..n].hash(&mut h);
    }
    Some(h.finish())
}

fn git(repo: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The repository's top directory.
pub fn repo_root(start: &Path) -> Result<PathBuf, String> {
    git(start, &["rev-parse", "--show-toplevel"]).map(PathBuf::from)
}

/// The default base: the merge base of HEAD with `origin/main` (or `main`);
/// when that is HEAD itself and the working tree is clean (we are on main),
/// HEAD's parent. Returns (commit, how it was chosen).
pub fn default_base(repo: &Path) -> Result<(String, String), String> {
    let head = git(repo, &["rev-parse", "HEAD"])?;
    let mut mb = None;
    for r in ["origin/main", "main"] {
        if let Ok(c) = git(repo, &["merge-base", "HEAD", r]) {
            mb = Some((c, format!("merge base of HEAD and {r}")));
            break;
        }
    }
    let (base, how) = mb.ok_or("no main or origin/main branch to take a merge base with")?;
    if base == head && is_clean(repo)? {
        let parent = git(repo, &["rev-parse", "HEAD~1"])?;
        return Ok((
            parent,
            "HEAD~1 (on main with a clean tree: the last commit is the change)".into(),
        ));
    }
    Ok((base, how))
}

/// No uncommitted or untracked changes.
pub fn is_clean(repo: &Path) -> Result<bool, String> {
    Ok(git(repo, &["status", "--porcelain"])?.is_empty())
}

/// A commit's full id and short id.
pub fn resolve(repo: &Path, rev: &str) -> Result<(String, String), String> {
    let full = git(
        repo,
        &["rev-parse", "--verify", &format!("{rev}^{{commit}}")],
    )?;
    let short = git(repo, &["rev-parse", "--short", &full])?;
    Ok((full, short))
}

/// Whether the working tree builds exactly what `rev` holds.
pub fn tree_equals(repo: &Path, rev: &str) -> Result<bool, String> {
    let a = git(repo, &["rev-parse", &format!("{rev}^{{tree}}")])?;
    let b = git(repo, &["rev-parse", "HEAD^{tree}"])?;
    Ok(a == b && is_clean(repo)?)
}

/// Check out `rev` into `dir` (replacing what a previous run left there).
pub fn worktree(repo: &Path, rev: &str, dir: &Path) -> Result<(), String> {
    if dir.exists() {
        let _ = git(
            repo,
            &["worktree", "remove", "--force", &dir.to_string_lossy()],
        );
        let _ = std::fs::remove_dir_all(dir);
    }
    let _ = git(repo, &["worktree", "prune"]);
    git(
        repo,
        &[
            "worktree",
            "add",
            "--detach",
            "--force",
            &dir.to_string_lossy(),
            rev,
        ],
    )?;
    Ok(())
}

/// Remove the base checkout.
pub fn remove_worktree(repo: &Path, dir: &Path) {
    let _ = git(
        repo,
        &["worktree", "remove", "--force", &dir.to_string_lossy()],
    );
    let _ = git(repo, &["worktree", "prune"]);
}

/// `cargo bench --no-run` of the `hot_path` bench in `src` (a workspace
/// root), into `target_dir`; returns the executable.
pub fn build(src: &Path, target_dir: &Path, features: &[&str]) -> Result<PathBuf, String> {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(src)
        .env("CARGO_TARGET_DIR", target_dir)
        .args([
            "bench",
            "-p",
            "piazza-bench",
            "--bench",
            "hot_path",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ]);
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    eprintln!(
        "bench-gate: building {} {}",
        src.display(),
        if features.is_empty() {
            String::new()
        } else {
            format!("with {}", features.join(","))
        }
    );
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let stdout = child.stdout.take().ok_or("cargo has no stdout")?;
    let mut exe = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo output: {e}"))?;
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact"
            && v["target"]["name"] == "hot_path"
            && let Some(p) = v["executable"].as_str()
        {
            exe = Some(PathBuf::from(p));
        }
    }
    let status = child.wait().map_err(|e| format!("cargo: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building the benchmarks in {} failed",
            src.display()
        ));
    }
    exe.ok_or_else(|| format!("cargo built no hot_path bench in {}", src.display()))
}

/// Copy a built executable to `dir/hot_path-{label}` (replacing an older
/// copy) and return the copy: later builds in the shared target directory
/// cannot change it.
pub fn keep(exe: &Path, dir: &Path, label: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let to = dir.join(format!("hot_path-{label}"));
    let _ = std::fs::remove_file(&to);
    std::fs::copy(exe, &to)
        .map_err(|e| format!("copying {} to {}: {e}", exe.display(), to.display()))?;
    Ok(to)
}

/// This machine's target triple (`rustc -vV`'s `host:`).
fn host_triple() -> Option<String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("-vV").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_string())
}

/// Remove the release artifacts of the path packages of the workspace at
/// `src` (its members and vendored crates) from `target_dir`, so the next
/// build of any checkout compiles them from its own sources (see the
/// module docs).
pub fn forget_path_packages(src: &Path, target_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut metadata = Command::new(&cargo);
    metadata
        .current_dir(src)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["metadata", "--format-version", "1", "--offline"]);
    // Offline, cargo metadata needs every package of the resolve on disk,
    // other platforms' too (a fresh machine's registry has only what its
    // builds fetched: `anstyle-wincon` is missing on Linux), unless the
    // graph is filtered to the platform that builds.
    if let Some(host) = host_triple() {
        metadata.args(["--filter-platform", &host]);
    }
    let out = metadata
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo metadata in {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("unreadable cargo metadata: {e}"))?;
    // Path packages have no `source` (registry and git packages have one).
    let names: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["source"].is_null())
        .filter_map(|p| p["name"].as_str().map(str::to_string))
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(src)
        .env("CARGO_TARGET_DIR", target_dir)
        .args(["clean", "--release", "--quiet"]);
    for n in &names {
        cmd.args(["-p", n]);
    }
    eprintln!(
        "bench-gate: removing the base's builds of {} from the target directory",
        names.join(", ")
    );
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo clean: {e}"))?;
    if !status.success() {
        return Err("cargo clean of the base's path packages failed".into());
    }
    Ok(())
}

/// Ask an executable which benchmarks it has (`--count-list`).
pub fn list(path: &Path) -> Result<Vec<Listed>, String> {
    let out = Command::new(path)
        .arg("--count-list")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} has no count mode (--count-list failed)",
            path.display()
        ));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("{}: unreadable --count-list: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_triple_is_rustc_s() {
        let host = host_triple().expect("rustc -vV names the host");
        assert!(host.split('-').count() >= 3, "{host}");
    }
}
