//! What the plugin prints: the ADD result, the VERSION answer and the error JSON, in the
//! format of the request's `cniVersion`.

use std::fmt::Display;

use serde_json::{Map, Value, json};

/// The versions whose result format this plugin emits (0.3.x/0.4.0 add `ips[].version`).
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The version of the VERSION answer and of errors whose request named none.
pub const CURRENT_VERSION: &str = "1.1.0";

// The spec's well-known error codes; 100 and up are netdriver's own.
pub const INCOMPATIBLE_VERSION: u32 = 1;
pub const UNKNOWN_CONTAINER: u32 = 3;
pub const INVALID_ENV: u32 = 4;
pub const IO: u32 = 5;
pub const DECODE: u32 = 6;
pub const INVALID_CONFIG: u32 = 7;
pub const TRY_AGAIN: u32 = 11;
pub const NOT_AVAILABLE: u32 = 50;
/// The daemon refused the request (a taken port or address, a conflict).
pub const REFUSED: u32 = 100;
/// The daemon failed (a kernel error).
pub const DAEMON_FAILED: u32 = 101;
/// CHECK found the attachment different from what ADD set up.
pub const CHECK_FAILED: u32 = 102;
/// GC could not remove every stale attachment.
pub const GC_FAILED: u32 = 103;

/// A CNI error: `{cniVersion, code, msg, details}` on stdout and a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    #[must_use]
    pub fn details(mut self, details: impl Display) -> Self {
        self.details = details.to_string();
        self
    }

    #[must_use]
    pub fn to_json(&self, version: &str) -> Value {
        let mut v = json!({"cniVersion": version, "code": self.code, "msg": self.msg});
        if !self.details.is_empty() {
            v["details"] = self.details.clone().into();
        }
        v
    }
}

/// The request's `cniVersion` when it is one this plugin speaks, else the current one.
#[must_use]
pub fn request_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| CURRENT_VERSION.into())
}

/// `major.minor.patch` as numbers, for "at least" comparisons.
pub fn version_at_least(version: &str, min: &str) -> bool {
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parse(version) >= parse(min)
}

/// The VERSION answer.
#[must_use]
pub fn version_info() -> Value {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// The ADD result for `endpoint` (the daemon's `Endpoint`) on a network whose bridge is
/// `bridge`: the bridge, the host end, the container interface (index 2, with its
/// namespace), its addresses and, when it has them (`default_routes`), default routes.
#[must_use]
pub fn add_result(
    version: &str,
    bridge: &str,
    endpoint: &Value,
    sandbox: &str,
    default_routes: bool,
) -> Value {
    let text = |k: &str| endpoint[k].as_str().unwrap_or_default().to_string();
    let interfaces = json!([
        {"name": bridge},
        {"name": text("host_ifname")},
        {"name": text("ifname"), "mac": text("mac"), "sandbox": sandbox},
    ]);
    let mut ips = Vec::new();
    let mut routes = Vec::new();
    let legacy = !version_at_least(version, "1.0.0");
    for (ip, len, gw, family, default) in [
        ("ip", "prefix_len", "gateway", "4", "0.0.0.0/0"),
        ("ip6", "prefix_len6", "gateway6", "6", "::/0"),
    ] {
        let Some(addr) = endpoint[ip].as_str() else {
            continue;
        };
        let mut entry = Map::new();
        entry.insert("address".into(), format!("{addr}/{}", endpoint[len]).into());
        if legacy {
            entry.insert("version".into(), family.into());
        }
        if let Some(gw) = endpoint[gw].as_str() {
            entry.insert("gateway".into(), gw.into());
            if default_routes {
                routes.push(json!({"dst": default, "gw": gw}));
            }
        }
        entry.insert("interface".into(), 2.into());
        ips.push(Value::Object(entry));
    }
    json!({"cniVersion": version, "interfaces": interfaces, "ips": ips, "routes": routes, "dns": {}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> Value {
        json!({"name": "cni-c1-eth0", "ifname": "eth0", "host_ifname": "nd0123456789",
            "ip": "10.22.0.2", "prefix_len": 24, "gateway": "10.22.0.1",
            "ip6": null, "prefix_len6": 0, "gateway6": null, "mac": "02:42:0a:16:00:02"})
    }

    #[test]
    fn result_in_the_requested_format() {
        let r = add_result("1.0.0", "br0", &endpoint(), "/var/run/netns/c1", true);
        assert_eq!(
            r,
            json!({"cniVersion": "1.0.0",
                "interfaces": [{"name": "br0"}, {"name": "nd0123456789"},
                    {"name": "eth0", "mac": "02:42:0a:16:00:02", "sandbox": "/var/run/netns/c1"}],
                "ips": [{"address": "10.22.0.2/24", "gateway": "10.22.0.1", "interface": 2}],
                "routes": [{"dst": "0.0.0.0/0", "gw": "10.22.0.1"}],
                "dns": {}})
        );
        let r = add_result("0.4.0", "br0", &endpoint(), "/x", false);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["routes"], json!([]));
        let mut ep = endpoint();
        ep["ip6"] = "2001:db8::2".into();
        ep["prefix_len6"] = 64.into();
        ep["gateway6"] = "2001:db8::1".into();
        let r = add_result("1.1.0", "br0", &ep, "/x", true);
        assert_eq!(r["ips"][1]["address"], "2001:db8::2/64");
        assert_eq!(r["routes"][1], json!({"dst": "::/0", "gw": "2001:db8::1"}));
    }

    #[test]
    fn errors_and_versions() {
        let e = CniError::new(7, "invalid network config").details("no name");
        assert_eq!(
            e.to_json("1.0.0"),
            json!({"cniVersion": "1.0.0", "code": 7, "msg": "invalid network config", "details": "no name"})
        );
        assert_eq!(request_version(br#"{"cniVersion":"0.4.0"}"#), "0.4.0");
        assert_eq!(
            request_version(br#"{"cniVersion":"9.9.9"}"#),
            CURRENT_VERSION
        );
        assert_eq!(request_version(b"not json"), CURRENT_VERSION);
        assert!(version_at_least("1.1.0", "1.0.0"));
        assert!(version_at_least("0.4.0", "0.4.0"));
        assert!(!version_at_least("0.3.1", "0.4.0"));
    }
}
