//! The `CNI_*` environment variables.

use super::output::{CniError, INVALID_ENV};

/// The environment of one invocation; an empty variable counts as unset (libcni exports
/// every variable, empty for GC and STATUS).
#[derive(Debug, Default, Clone)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
}

/// What ADD, DEL and CHECK act on: one attachment of one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Empty for a DEL whose namespace is already gone.
    pub netns: String,
}

impl Env {
    pub fn from_process() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |k: &str| get(k).filter(|v| !v.is_empty());
        Self {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
        }
    }

    /// The attachment ADD/DEL/CHECK work on; `netns_required` is false for DEL.
    pub fn attachment(&self, netns_required: bool) -> Result<Attachment, CniError> {
        let mut missing = Vec::new();
        if self.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if self.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if netns_required && self.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                INVALID_ENV,
                format!("missing environment variables: {}", missing.join(", ")),
            ));
        }
        let container_id = self.container_id.clone().unwrap_or_default();
        if !valid_container_id(&container_id) {
            return Err(CniError::new(
                INVALID_ENV,
                format!(
                    "invalid CNI_CONTAINERID {container_id:?}: letters, digits, '_', '.', '-', starting with a letter or digit"
                ),
            ));
        }
        Ok(Attachment {
            container_id,
            ifname: self.ifname.clone().unwrap_or_default(),
            netns: self.netns.clone().unwrap_or_default(),
        })
    }
}

/// The spec's rule for container ids: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn valid_container_id(id: &str) -> bool {
    let mut chars = id.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Env {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Env::from_vars(|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    #[test]
    fn names_every_missing_variable() {
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_NETNS", "")]);
        let err = e.attachment(true).unwrap_err();
        assert_eq!(err.code, INVALID_ENV);
        assert_eq!(
            err.msg,
            "missing environment variables: CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS"
        );
        let e = env(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(e.attachment(false).unwrap().netns, "");
        assert!(e.attachment(true).is_err());
        let e = env(&[("CNI_CONTAINERID", "-x"), ("CNI_IFNAME", "eth0")]);
        assert_eq!(e.attachment(false).unwrap_err().code, INVALID_ENV);
    }
}
