//! ADD, DEL, CHECK, STATUS, GC and VERSION, each a few calls to the daemon's API.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{
    conf::{self, GcAttachment, LABEL_CONTAINER, LABEL_IFNAME, NetConf},
    env::{Attachment, Env},
    output::{self as out, CniError},
};
use crate::client::path_segment as seg;

/// One invocation: `Some(result)` to print, `None` for commands that print nothing.
pub fn dispatch(env: &Env, stdin: &[u8], socket: &Path) -> Result<Option<Value>, CniError> {
    let Some(command) = env.command.as_deref() else {
        return Err(CniError::new(
            out::INVALID_ENV,
            "missing environment variables: CNI_COMMAND",
        ));
    };
    if command == "VERSION" {
        return Ok(Some(out::version_info()));
    }
    let conf = parse(stdin, command)?;
    let d = Daemon {
        socket: conf.socket.clone().unwrap_or_else(|| socket.to_owned()),
    };
    match command {
        "ADD" => add(&d, &conf, &env.attachment(true)?).map(Some),
        "DEL" => del(&d, &env.attachment(false)?).map(|()| None),
        "CHECK" => check(&d, &conf, &env.attachment(true)?).map(|()| None),
        "STATUS" => status(&d).map(|()| None),
        "GC" => gc(&d, &conf).map(|()| None),
        other => Err(CniError::new(
            out::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

/// Decodes the configuration and checks its version against the command.
fn parse(stdin: &[u8], command: &str) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin)
        .map_err(|e| CniError::new(out::DECODE, "failed to decode content").details(e))?;
    let version = conf.cni_version.as_str();
    if !out::SUPPORTED_VERSIONS.contains(&version) {
        return Err(
            CniError::new(out::INCOMPATIBLE_VERSION, "incompatible CNI version").details(format!(
                "config version {version:?}; netdriver supports {}",
                out::SUPPORTED_VERSIONS.join(", ")
            )),
        );
    }
    let min = match command {
        "CHECK" => "0.4.0",
        "STATUS" | "GC" => "1.1.0",
        _ => "0.0.0",
    };
    if !out::version_at_least(version, min) {
        return Err(
            CniError::new(out::INCOMPATIBLE_VERSION, "incompatible CNI version").details(format!(
                "{command} needs cniVersion {min} or later, got {version}"
            )),
        );
    }
    if conf.name.is_empty() {
        return Err(
            CniError::new(out::INVALID_CONFIG, "invalid network config").details("missing name")
        );
    }
    Ok(conf)
}

fn add(d: &Daemon, conf: &NetConf, att: &Attachment) -> Result<Value, CniError> {
    let (network, created) = ensure_network(d, conf)?;
    let request = conf.endpoint_request(att)?;
    let endpoint = match d.call("POST", "/v1/endpoints", Some(&request)) {
        Ok(ep) => ep,
        Err(e) => {
            if created {
                // Leave things as they were; refused if another ADD attached meanwhile.
                let _ = d.call("DELETE", &format!("/v1/networks/{}", seg(&conf.name)), None);
            }
            return Err(e);
        }
    };
    let bridge = network["bridge"].as_str().unwrap_or_default();
    let first = first_in_netns(d, &endpoint)?;
    Ok(out::add_result(
        &conf.cni_version,
        bridge,
        &endpoint,
        &att.netns,
        first,
    ))
}

/// Whether `endpoint` is the only netdriver attachment in its namespace: the first one
/// has the container's default routes, later ones keep them (see the README).
fn first_in_netns(d: &Daemon, endpoint: &Value) -> Result<bool, CniError> {
    let all = d.call("GET", "/v1/endpoints", None)?;
    Ok(!all
        .as_array()
        .into_iter()
        .flatten()
        .any(|e| e["netns"] == endpoint["netns"] && e["name"] != endpoint["name"]))
}

/// The configuration's network, created if missing; whether this call created it.
fn ensure_network(d: &Daemon, conf: &NetConf) -> Result<(Value, bool), CniError> {
    let request = conf.network_request()?;
    let path = format!("/v1/networks/{}", seg(&conf.name));
    if let Some(existing) = d.get(&path)? {
        return matching(conf, &request, existing).map(|n| (n, false));
    }
    match d.call("POST", "/v1/networks", Some(&request)) {
        Ok(created) => Ok((created, true)),
        // Another ADD created it meanwhile (runtimes run containers in parallel).
        Err(e) if e.code == out::REFUSED => match d.get(&path)? {
            Some(existing) => matching(conf, &request, existing).map(|n| (n, false)),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

/// The existing network, if every setting the configuration gives agrees with it.
fn matching(conf: &NetConf, request: &Value, existing: Value) -> Result<Value, CniError> {
    for (key, field) in [
        ("subnet", "subnet"),
        ("gateway", "gateway"),
        ("subnet_v6", "subnet6"),
        ("gateway_v6", "gateway6"),
        ("bridge", "bridge"),
        ("mtu", "mtu"),
        ("masquerade", "masquerade"),
        ("icc", "icc"),
    ] {
        let (want, have) = (&request[key], &existing[field]);
        if !want.is_null() && want != have {
            return Err(
                CniError::new(out::INVALID_CONFIG, "invalid network config").details(format!(
                    "network {:?} exists with {field} {have}, the configuration says {want}",
                    conf.name
                )),
            );
        }
    }
    Ok(existing)
}

/// Idempotent: an attachment that is already gone is a success.
fn del(d: &Daemon, att: &Attachment) -> Result<(), CniError> {
    let path = format!("/v1/endpoints/{}", seg(&conf::endpoint_name(att)));
    match d.request("DELETE", &path, None)? {
        (status, _) if (200..300).contains(&status) || status == 404 => Ok(()),
        (status, body) => Err(daemon_error(status, &body)),
    }
}

fn check(d: &Daemon, conf: &NetConf, att: &Attachment) -> Result<(), CniError> {
    let name = conf::endpoint_name(att);
    let path = format!("/v1/endpoints/{}", seg(&name));
    let Some(ep) = d.get(&path)? else {
        return Err(
            CniError::new(out::UNKNOWN_CONTAINER, "unknown attachment").details(format!(
                "no endpoint {name} for container {}",
                att.container_id
            )),
        );
    };
    let failed =
        |why: String| CniError::new(out::CHECK_FAILED, "attachment check failed").details(why);
    if ep["network"] != conf.name.as_str() {
        return Err(failed(format!(
            "endpoint {name} is on network {}",
            ep["network"]
        )));
    }
    if ep["netns"] != att.netns.as_str() {
        return Err(failed(format!("endpoint {name} is in {}", ep["netns"])));
    }
    if let Some(prev) = &conf.prev_result {
        check_prev_result(prev, &ep).map_err(failed)?;
    }
    let report = d.call("GET", &format!("{path}/check"), None)?;
    let problems: Vec<&str> = report["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(failed(problems.join("; ")))
    }
}

/// The addresses `prevResult` lists are the endpoint's.
fn check_prev_result(prev: &Value, ep: &Value) -> Result<(), String> {
    let listed: Vec<&str> = prev["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .collect();
    for (ip, len) in [("ip", "prefix_len"), ("ip6", "prefix_len6")] {
        if let Some(addr) = ep[ip].as_str() {
            let cidr = format!("{addr}/{}", ep[len]);
            if !listed.contains(&cidr.as_str()) {
                return Err(format!("prevResult does not list {cidr}"));
            }
        }
    }
    Ok(())
}

fn status(d: &Daemon) -> Result<(), CniError> {
    d.call("GET", "/v1/status", None).map(|_| ()).map_err(|e| {
        CniError::new(out::NOT_AVAILABLE, "netdriver daemon not available")
            .details(format!("{}: {}", e.msg, e.details))
    })
}

/// Removes this network's CNI endpoints whose attachment the runtime no longer knows;
/// keeps going on errors and reports them all.
fn gc(d: &Daemon, conf: &NetConf) -> Result<(), CniError> {
    let endpoints = d.call("GET", "/v1/endpoints", None)?;
    let valid = conf.valid();
    let mut errors = Vec::new();
    for ep in endpoints.as_array().into_iter().flatten() {
        let labels = &ep["labels"];
        let (Some(id), Some(ifname)) = (
            labels[LABEL_CONTAINER].as_str(),
            labels[LABEL_IFNAME].as_str(),
        ) else {
            continue;
        };
        let att = GcAttachment {
            container_id: id.into(),
            ifname: ifname.into(),
        };
        if ep["network"] != conf.name.as_str() || valid.is_some_and(|v| v.contains(&att)) {
            continue;
        }
        let name = ep["name"].as_str().unwrap_or_default();
        match d.request("DELETE", &format!("/v1/endpoints/{}", seg(name)), None)? {
            (s, _) if (200..300).contains(&s) || s == 404 => {}
            (s, body) => errors.push(format!("{name}: {}", daemon_error(s, &body).details)),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(
            CniError::new(out::GC_FAILED, "garbage collection incomplete")
                .details(errors.join("; ")),
        )
    }
}

/// The daemon's API socket.
struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), CniError> {
        crate::client::request(&self.socket, method, path, body).map_err(|e| {
            CniError::new(out::TRY_AGAIN, "netdriver daemon not reachable")
                .details(format!("{e:#}"))
        })
    }

    /// A 2xx answer's body, else the daemon's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, CniError> {
        match self.request(method, path, body)? {
            (s, v) if (200..300).contains(&s) => Ok(v),
            (s, v) => Err(daemon_error(s, &v)),
        }
    }

    /// `GET`, with a 404 as `None`.
    fn get(&self, path: &str) -> Result<Option<Value>, CniError> {
        match self.request("GET", path, None)? {
            (s, v) if (200..300).contains(&s) => Ok(Some(v)),
            (404, _) => Ok(None),
            (s, v) => Err(daemon_error(s, &v)),
        }
    }
}

/// The daemon's `{"error": ...}` as a CNI error, its message as the details.
fn daemon_error(status: u16, body: &Value) -> CniError {
    let message = body["error"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_string);
    let (code, msg) = match status {
        400 => (out::INVALID_CONFIG, "invalid network config"),
        500.. => (out::DAEMON_FAILED, "netdriver daemon failed"),
        _ => (out::REFUSED, "netdriver refused the request"),
    };
    CniError::new(code, msg).details(message)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn env(command: &str) -> Env {
        Env {
            command: Some(command.into()),
            ..Env::default()
        }
    }

    #[test]
    fn refuses_before_calling_the_daemon() {
        let nowhere = Path::new("/nonexistent/nd.sock");
        let run = |cmd: &str, stdin: &str| dispatch(&env(cmd), stdin.as_bytes(), nowhere);
        assert_eq!(run("ADD", "{not json").unwrap_err().code, out::DECODE);
        let e = run("ADD", r#"{"cniVersion":"0.2.0","name":"n"}"#).unwrap_err();
        assert_eq!((e.code, e.msg.as_str()), (1, "incompatible CNI version"));
        assert_eq!(
            run("GC", r#"{"cniVersion":"1.0.0","name":"n"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            run("CHECK", r#"{"cniVersion":"0.3.1","name":"n"}"#)
                .unwrap_err()
                .code,
            1
        );
        assert_eq!(
            run("ADD", r#"{"cniVersion":"1.0.0"}"#).unwrap_err().code,
            out::INVALID_CONFIG
        );
        assert_eq!(
            run("ADD", r#"{"cniVersion":"1.0.0","name":"n"}"#)
                .unwrap_err()
                .code,
            out::INVALID_ENV
        );
        assert_eq!(
            run("FOO", r#"{"cniVersion":"1.0.0","name":"n"}"#)
                .unwrap_err()
                .code,
            out::INVALID_ENV
        );
        let v = run("VERSION", "").unwrap().unwrap();
        assert_eq!(v["supportedVersions"], json!(SUPPORTED));
        let e = run("STATUS", r#"{"cniVersion":"1.1.0","name":"n"}"#).unwrap_err();
        assert_eq!(e.code, out::NOT_AVAILABLE);
    }

    const SUPPORTED: [&str; 5] = out::SUPPORTED_VERSIONS;

    #[test]
    fn daemon_errors_keep_their_message() {
        let e = daemon_error(409, &json!({"error": "host port 8080/tcp is taken by web"}));
        assert_eq!(e.code, out::REFUSED);
        assert_eq!(e.details, "host port 8080/tcp is taken by web");
        assert_eq!(
            daemon_error(400, &json!({"error": "x"})).code,
            out::INVALID_CONFIG
        );
        assert_eq!(
            daemon_error(500, &json!({"error": "x"})).code,
            out::DAEMON_FAILED
        );
    }

    #[test]
    fn prev_result_must_list_the_addresses() {
        let ep = json!({"ip": "10.0.0.2", "prefix_len": 24, "ip6": null});
        let prev = json!({"ips": [{"address": "10.0.0.2/24"}]});
        assert!(check_prev_result(&prev, &ep).is_ok());
        let prev = json!({"ips": [{"address": "10.0.0.3/24"}]});
        assert!(check_prev_result(&prev, &ep).is_err());
    }
}
