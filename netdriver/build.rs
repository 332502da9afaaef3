//! Builds netdriver-ebpf for the BPF target with aya-build; `dataplane.rs` embeds the object.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=NETDRIVER_EBPF_TOOLCHAIN");
    let toolchain = std::env::var("NETDRIVER_EBPF_TOOLCHAIN").unwrap_or_else(|_| "nightly".into());
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|package| package.name == "netdriver-ebpf")
        .ok_or_else(|| anyhow!("netdriver-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("netdriver-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [Package {
            name: ebpf.name.as_str(),
            root_dir: root_dir.as_str(),
            ..Package::default()
        }],
        // `cargo xtask` names the nightly it set up (bpf-linker is built against its LLVM);
        // without it, the preinstalled `nightly` (see shared/docs/toolchain.md).
        Toolchain::Custom(&toolchain),
    )
}
