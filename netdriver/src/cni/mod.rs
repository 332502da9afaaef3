//! The CNI plugin (spec 1.0/1.1): the same `netdriver` binary, run by a container runtime
//! with `CNI_*` environment variables and the network configuration on stdin. It talks to
//! the running daemon over its API socket and never touches the kernel itself.
//!
//! Invoked as a plugin when it gets no arguments and `CNI_COMMAND` is set (how runtimes
//! run `/opt/cni/bin/<type>`, e.g. a symlink named `netdriver`), when its file name is
//! `netdriver-cni`, or as `netdriver cni`.

mod conf;
mod env;
mod ops;
mod output;

use std::{
    io::{Read, Write},
    path::Path,
    process::ExitCode,
};

pub use self::output::{CniError, SUPPORTED_VERSIONS};

/// Whether the process was started the way a runtime starts a CNI plugin.
#[must_use]
pub fn invoked_as_plugin() -> bool {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    let named_cni = argv0
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "netdriver-cni");
    named_cni || (args.next().is_none() && std::env::var_os("CNI_COMMAND").is_some())
}

/// Runs one CNI operation: reads stdin and the environment, prints the result (or the
/// error JSON) on stdout. `socket` is the daemon's socket unless the config names one.
#[must_use]
pub fn run(socket: &Path) -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => ops::dispatch(&env::Env::from_process(), &stdin, socket),
        Err(e) => Err(CniError::new(output::IO, "failed to read stdin").details(e)),
    };
    let (text, code) = match outcome {
        Ok(Some(value)) => (value.to_string(), ExitCode::SUCCESS),
        Ok(None) => (String::new(), ExitCode::SUCCESS),
        Err(e) => {
            let version = output::request_version(&stdin);
            (e.to_json(&version).to_string(), ExitCode::FAILURE)
        }
    };
    if !text.is_empty() {
        let mut out = std::io::stdout().lock();
        // Nothing else can be done when stdout is gone; the exit code still says it.
        let _ = writeln!(out, "{text}");
    }
    code
}
