//! The images: the cached offline base (debootstrap of bookworm + Debian's nodejs + a `node` user,
//! kept as an image tag and as a rootfs tarball under target/containers), the example image built
//! from examples/docker/Dockerfile's `prebuilt` stage, and the systemd image (`systemd.rs`).

use super::host::{host_mirror, BASE_IMAGE};
use super::{podman, podman_ok, repo, run, work_dir};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The base image, made once: the tag if the store has it, else the cached rootfs tarball, else
/// debootstrap (minbase + nodejs, a `node` user like the official node images', no docs or apt
/// caches) into a tarball first.
pub(super) fn base_image() -> &'static str {
    static MADE: Mutex<bool> = Mutex::new(false);
    made_once(BASE_IMAGE, &MADE, "containers", |tarball| {
        if !tarball.is_file() {
            make_base_tarball(tarball);
        }
        podman_ok(&[
            "import",
            "--change",
            "ENV=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "CMD=[\"node\"]",
            &tarball.to_string_lossy(),
            BASE_IMAGE,
        ]);
    })
}

/// An image made at most once per test process: `tag` if the store has it, else `make(archive)`,
/// which makes the tag from (or first into) the archive kept under target/containers for it.
/// `made` is the caller's flag (one per image); prints how long making it took.
pub(super) fn made_once(
    tag: &'static str,
    made: &Mutex<bool>,
    what: &str,
    make: impl FnOnce(&Path),
) -> &'static str {
    let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
    if *made || podman(&["image", "exists", tag]).ok() {
        *made = true;
        return tag;
    }
    let started = Instant::now();
    let name = tag.rsplit('/').next().unwrap_or(tag).replace(':', "-");
    make(&work_dir().join(format!("{name}.tar")));
    eprintln!(
        "[{what}] image {tag}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    *made = true;
    tag
}

fn make_base_tarball(tarball: &Path) {
    // One fixed name, so the next run removes what an interrupted one left.
    let rootfs = work_dir().join("base-rootfs");
    remove_rootfs(&rootfs);
    let mirror = host_mirror();
    let sh = |script: &str, timeout: u64| {
        let mut c = Command::new("sh");
        c.args(["-ec", script]);
        let out = run(c, Duration::from_secs(timeout));
        assert!(out.ok(), "{script}:\n{}{}", out.stdout, out.stderr);
    };
    let r = rootfs.to_string_lossy();
    sh(
        &format!("debootstrap --variant=minbase --include=nodejs bookworm '{r}' '{mirror}'"),
        900,
    );
    sh(
        &format!(
            "chroot '{r}' groupadd --gid 1000 node
             chroot '{r}' useradd --uid 1000 --gid node --shell /bin/bash --create-home node
             rm -rf '{r}'/var/cache/apt/archives/*.deb '{r}'/var/cache/apt/*.bin \
                    '{r}'/var/lib/apt/lists/* '{r}'/usr/share/doc '{r}'/usr/share/man \
                    '{r}'/usr/share/info '{r}'/usr/share/locale
             tar -C '{r}' --numeric-owner -cf '{t}.tmp' .
             mv '{t}.tmp' '{t}'",
            t = tarball.to_string_lossy()
        ),
        300,
    );
    remove_rootfs(&rootfs);
}

/// Removes a (leftover) rootfs, unmounting what an interrupted debootstrap left mounted in it first.
fn remove_rootfs(rootfs: &Path) {
    if !rootfs.exists() {
        return;
    }
    let prefix = format!("{}/", rootfs.to_string_lossy());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for m in mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .rev()
    {
        if m.starts_with(&prefix) {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    assert!(
        !mounts.contains(&prefix),
        "{} still has mounts in it; unmount them and remove it",
        rootfs.display()
    );
    std::fs::remove_dir_all(rootfs)
        .unwrap_or_else(|e| panic!("removing {}: {e}", rootfs.display()));
}

/// This process's build context, made on first use (removed by the last test out).
static CONTEXT: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The build context: what the Dockerfile's `prebuilt` stage copies, laid out as in the repository
/// (examples/docker/app, target/release/cohort). The binary is the one this suite tests, stripped.
fn build_context() -> PathBuf {
    let mut context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = context.as_ref() {
        return ctx.clone();
    }
    let ctx = work_dir().join(format!("context-{}", std::process::id()));
    let app = ctx.join("examples/docker/app");
    let bin = ctx.join("target/release");
    for d in [&app, &bin] {
        std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
    for f in ["cohort.toml", "server.js"] {
        let from = repo("examples/docker/app").join(f);
        std::fs::copy(&from, app.join(f)).unwrap_or_else(|e| panic!("{}: {e}", from.display()));
    }
    strip_cohort_to(&bin.join("cohort"));
    *context = Some(ctx.clone());
    ctx
}

/// Writes the cohort binary this suite tests, stripped (a sixth of the debug build's size), to `dest`.
pub fn strip_cohort_to(dest: &Path) {
    let mut strip = Command::new("strip");
    strip.arg("-o").arg(dest).arg(env!("CARGO_BIN_EXE_cohort"));
    let out = run(strip, Duration::from_secs(60));
    assert!(out.ok(), "strip: {}", out.stderr);
}

/// Removes the build context (the last test out calls it; the next build makes a new one).
pub fn remove_build_context() {
    let mut context = CONTEXT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(ctx) = context.take() {
        let _ = std::fs::remove_dir_all(ctx);
    }
}

/// `podman build --target prebuilt` of examples/docker/Dockerfile on the base image, as `image`.
pub fn build_image(image: &str) {
    let base = base_image();
    let started = Instant::now();
    let arg = format!("NODE_IMAGE={base}");
    let dockerfile = repo("examples/docker/Dockerfile");
    podman_ok(&[
        "build",
        "--quiet",
        // No intermediate images: tests build in parallel and remove their images when done.
        "--layers=false",
        "--target",
        "prebuilt",
        "--build-arg",
        &arg,
        "-f",
        &dockerfile.to_string_lossy(),
        "-t",
        image,
        &build_context().to_string_lossy(),
    ]);
    eprintln!(
        "[containers] build {image}: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
