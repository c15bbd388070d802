//! What the tests need from outside the repository, installed by scripts/setup (never by a test):
//! a missing tool or npm package fails the test with what to run, instead of skipping it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Whether `cmd` is an executable on PATH (or an executable path).
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", "command -v \"$0\"", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Fails the test unless `cmd` is installed: "needs CMD (Debian package PKG): scripts/setup installs it".
pub fn require_tool(cmd: &str, package: &str) {
    assert!(
        have(cmd),
        "needs {cmd} (Debian package {package}): scripts/setup installs it (run scripts/test, or scripts/setup as root)"
    );
}

/// The node_modules folder scripts/setup fills with the npm packages the tests use.
pub fn test_node_modules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-deps/node_modules")
}

/// The node_modules folder, failing the test unless npm package `name` is installed in it.
pub fn require_npm(name: &str) -> PathBuf {
    let dir = test_node_modules();
    assert!(
        dir.join(name).join("package.json").is_file(),
        "needs the npm package {name} in {}: scripts/setup installs it (run scripts/test, or scripts/setup)",
        dir.display()
    );
    dir
}
