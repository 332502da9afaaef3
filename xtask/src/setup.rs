//! Fresh-machine setup, following ../shared/docs/toolchain.md: the nightly with `rust-src`,
//! `bpf-linker` built against that nightly's own libLLVM, and the Debian packages the daemon
//! and the tests use. Each step is skipped when its result is already present.

use std::{
    env,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};

/// The nightly the project was verified with (same build as the preinstalled `nightly`).
const PINNED_NIGHTLY: &str = "nightly-2026-05-20";
const NIGHTLY_COMMIT_DATE: &str = "2026-05-19";

/// Debian packages by the command that tells they are installed.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("bpftool", "bpftool"),
    ("iptables", "iptables"),
    ("nft", "nftables"),
    // The Docker plugin tests run a real dockerd (20.10) with its own containerd, on an
    // image built from the static busybox.
    ("dockerd", "docker.io"),
    ("containerd", "containerd"),
    ("busybox", "busybox-static"),
];

/// What the bench needs besides the above (`cargo xtask bench` only).
const BENCH_PACKAGES: &[(&str, &str)] = &[("iperf3", "iperf3"), ("ss", "iproute2")];

/// Where the bench keeps `docker-proxy` when Debian's docker.io is not installed: the binary
/// is taken out of the package, so installing it starts no dockerd and adds no
/// dependencies.
pub fn local_docker_proxy() -> PathBuf {
    home().join(".local/share/netdriver/bin/docker-proxy")
}

/// What later cargo invocations need to know about the setup.
pub struct Env {
    /// The toolchain the eBPF crate is built with (read by netdriver/build.rs).
    pub ebpf_toolchain: String,
    cargo_bin: PathBuf,
}

impl Env {
    pub fn apply(&self, cmd: &mut Command) {
        let path = env::var_os("PATH").unwrap_or_default();
        let mut paths = vec![self.cargo_bin.clone()];
        paths.extend(env::split_paths(&path));
        cmd.env(
            "PATH",
            env::join_paths(paths).expect("PATH entries are valid"),
        );
        cmd.env("NETDRIVER_EBPF_TOOLCHAIN", &self.ebpf_toolchain);
    }
}

pub fn run() -> Result<Env> {
    ensure_packages()?;
    let toolchain = ensure_nightly()?;
    let cargo_bin = cargo_home().join("bin");
    ensure_bpf_linker(&toolchain, &cargo_bin)?;
    eprintln!("xtask: setup complete (eBPF toolchain {toolchain})");
    Ok(Env {
        ebpf_toolchain: toolchain,
        cargo_bin,
    })
}

fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map_or_else(|| home().join(".cargo"), PathBuf::from)
}

fn home() -> PathBuf {
    env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn have_command(name: &str) -> bool {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .any(|dir| dir.join(name).is_file())
}

fn ensure_packages() -> Result<()> {
    install_missing(PACKAGES)
}

/// iperf3 and Docker's `docker-proxy` (Debian's docker.io, the one the bench compares with).
pub fn ensure_bench_packages() -> Result<()> {
    install_missing(BENCH_PACKAGES)?;
    if have_command("docker-proxy") || local_docker_proxy().is_file() {
        return Ok(());
    }
    eprintln!("xtask: extracting docker-proxy from Debian's docker.io package");
    let dir = env::temp_dir().join(format!("netdriver-docker-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    run_cmd(Command::new("apt-get").arg("update"), "apt-get update")?;
    run_cmd(
        Command::new("apt-get")
            .args(["download", "docker.io"])
            .current_dir(&dir),
        "apt-get download docker.io",
    )?;
    let deb = std::fs::read_dir(&dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let root = dir.join("root");
    run_cmd(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root),
        "dpkg-deb -x",
    )?;
    let target = local_docker_proxy();
    std::fs::create_dir_all(target.parent().expect("has a parent"))?;
    std::fs::copy(root.join("usr/sbin/docker-proxy"), &target)
        .context("the docker.io package has no usr/sbin/docker-proxy")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn install_missing(packages: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<&str> = packages
        .iter()
        .filter(|(cmd, _)| !have_command(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run_cmd(Command::new("apt-get").arg("update"), "apt-get update")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        "apt-get install",
    )
}

/// Uses the preinstalled `nightly` when it is the verified build, else installs the pinned
/// dated toolchain; makes sure it has `rust-src`.
fn ensure_nightly() -> Result<String> {
    let toolchain = if nightly_is_verified("nightly") {
        "nightly".to_string()
    } else {
        if !nightly_is_verified(PINNED_NIGHTLY) {
            eprintln!("xtask: installing {PINNED_NIGHTLY}");
            run_cmd(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    PINNED_NIGHTLY,
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
                "rustup toolchain install",
            )?;
        }
        PINNED_NIGHTLY.to_string()
    };
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        &toolchain,
    ]))?;
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("xtask: adding rust-src to {toolchain}");
        run_cmd(
            Command::new("rustup").args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                &toolchain,
            ]),
            "rustup component add rust-src",
        )?;
    }
    Ok(toolchain)
}

fn nightly_is_verified(toolchain: &str) -> bool {
    output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )
    .is_ok_and(|v| v.contains("-nightly") && v.contains(NIGHTLY_COMMIT_DATE))
}

/// bpf-linker must use the nightly's LLVM; it is built against the nightly's own libLLVM.
fn ensure_bpf_linker(toolchain: &str, cargo_bin: &Path) -> Result<()> {
    let linker = cargo_bin.join("bpf-linker");
    // It finds libLLVM through the library path `rustup run` sets, as aya-build runs it.
    let works = Command::new("rustup")
        .args(["run", toolchain])
        .arg(&linker)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if works {
        return Ok(());
    }
    eprintln!("xtask: building bpf-linker against {toolchain}'s libLLVM (takes a few minutes)");
    let sysroot = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    )?;
    let sysroot = PathBuf::from(sysroot.trim());
    let version = output(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .arg("-vV"),
    )?;
    let major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc -vV shows no LLVM version")?
        .to_string();
    let libllvm = std::fs::read_dir(sysroot.join("lib"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .context("the nightly ships no libLLVM.so.*-rust-*")?;
    let prefix = home().join(".local/share/netdriver/llvm").join(toolchain);
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let link = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    run_cmd(
        Command::new("cargo")
            .arg(format!("+{toolchain}"))
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{major}"))
            .env("LLVM_PREFIX", &prefix),
        "cargo install bpf-linker",
    )?;
    if !linker.is_file() {
        bail!(
            "bpf-linker was installed but {} is missing",
            linker.display()
        );
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn run_cmd(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    if status.success() {
        Ok(())
    } else {
        bail!("{what} failed ({status})")
    }
}
