//! A network's policy from `network create`: the flags, Docker's `-o key=value` options, and
//! the checks that they agree with each other.

use std::{collections::BTreeMap, net::Ipv4Addr, str::FromStr};

use super::ServiceError;
use crate::model::{CreateNetwork, GatewayMode};

/// Docker's option keys that map onto a setting.
const ICC: &str = "com.docker.network.bridge.enable_icc";
const MASQUERADE: &str = "com.docker.network.bridge.enable_ip_masquerade";
const HOST_BINDING: &str = "com.docker.network.bridge.host_binding_ipv4";
const GATEWAY_MODE: &str = "com.docker.network.bridge.gateway_mode_ipv4";
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const INTERNAL: &str = "com.docker.network.internal";
const MTU: &str = "com.docker.network.driver.mtu";
const HOST_IPV4: &str = "com.docker.network.host_ipv4";
const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// Keys accepted when they ask for what netdriver does anyway.
const HARMLESS: [(&str, &str); 3] = [
    ("com.docker.network.enable_ipv4", "true"),
    ("com.docker.network.bridge.inhibit_ipv4", "false"),
    ("com.docker.network.bridge.default_bridge", "false"),
];

/// The resolved settings of a new network.
#[derive(Debug, Clone, PartialEq, Eq)]
#[expect(
    clippy::struct_excessive_bools,
    reason = "one field per Docker on/off option"
)]
pub(super) struct NetPolicy {
    pub icc: bool,
    pub masquerade: bool,
    pub snat_ip: Option<Ipv4Addr>,
    pub internal: bool,
    pub gateway_mode: GatewayMode,
    pub host_binding_ipv4: Option<Ipv4Addr>,
    pub mtu: Option<u32>,
    pub bridge: Option<String>,
    /// `--ipv6` / `com.docker.network.enable_ipv6`.
    pub ipv6: bool,
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::Invalid(msg)
}

/// Merges a flag with an option key: either may be absent; both present must agree.
fn merge<T: PartialEq + std::fmt::Debug>(
    flag_name: &str,
    flag: Option<T>,
    key: &str,
    option: Option<T>,
) -> Result<Option<T>, ServiceError> {
    match (flag, option) {
        (Some(f), Some(o)) if f != o => Err(invalid(format!(
            "contradictory options: {flag_name} {f:?} and {key}={o:?}"
        ))),
        (f, o) => Ok(f.or(o)),
    }
}

fn parse_opt<T: FromStr>(
    options: &BTreeMap<String, String>,
    key: &str,
    what: &str,
) -> Result<Option<T>, ServiceError> {
    options
        .get(key)
        .map(|v| {
            v.trim()
                .parse()
                .map_err(|_| invalid(format!("invalid option {key}={v:?}: expected {what}")))
        })
        .transpose()
}

fn parse_ip(what: &str, s: &str) -> Result<Ipv4Addr, ServiceError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(format!("invalid {what} {s:?}: expected an IPv4 address")))
}

fn parse_mode(what: &str, s: &str) -> Result<GatewayMode, ServiceError> {
    match s.trim() {
        "nat" => Ok(GatewayMode::Nat),
        "routed" => Ok(GatewayMode::Routed),
        other => Err(invalid(format!(
            "unsupported {what} {other:?}: netdriver supports \"nat\" and \"routed\""
        ))),
    }
}

fn check_keys(options: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    let known = [
        ICC,
        MASQUERADE,
        HOST_BINDING,
        GATEWAY_MODE,
        BRIDGE_NAME,
        INTERNAL,
        MTU,
        HOST_IPV4,
        ENABLE_IPV6,
    ];
    for (key, value) in options {
        if known.contains(&key.as_str()) {
            continue;
        }
        match HARMLESS.iter().find(|(k, _)| k == key) {
            Some((_, ok)) if value.trim() == *ok => {}
            Some((_, ok)) => {
                return Err(invalid(format!(
                    "unsupported option {key}={value:?}: only {ok:?} is supported"
                )));
            }
            None => return Err(invalid(format!("unknown network option {key:?}"))),
        }
    }
    Ok(())
}

/// Resolves and checks the request's policy settings.
pub(super) fn resolve(req: &CreateNetwork) -> Result<NetPolicy, ServiceError> {
    let o = &req.options;
    check_keys(o)?;
    let icc = merge("--icc", req.icc, ICC, parse_opt(o, ICC, "true or false")?)?;
    let masq = merge(
        "--masquerade",
        req.masquerade,
        MASQUERADE,
        parse_opt(o, MASQUERADE, "true or false")?,
    )?;
    let internal = merge(
        "--internal",
        req.internal,
        INTERNAL,
        parse_opt(o, INTERNAL, "true or false")?,
    )?
    .unwrap_or(false);
    let flag_mode = req
        .gateway_mode
        .as_deref()
        .map(|m| parse_mode("--gateway-mode", m))
        .transpose()?;
    let opt_mode = o
        .get(GATEWAY_MODE)
        .map(|m| parse_mode(GATEWAY_MODE, m))
        .transpose()?;
    let mode = merge("--gateway-mode", flag_mode, GATEWAY_MODE, opt_mode)?.unwrap_or_default();
    let flag_snat = req
        .snat_ip
        .as_deref()
        .map(|s| parse_ip("--snat-ip", s))
        .transpose()?;
    let opt_snat = o
        .get(HOST_IPV4)
        .map(|s| parse_ip(HOST_IPV4, s))
        .transpose()?;
    let snat_ip = merge("--snat-ip", flag_snat, HOST_IPV4, opt_snat)?;
    let host_binding_ipv4 = o
        .get(HOST_BINDING)
        .map(|s| parse_ip(HOST_BINDING, s))
        .transpose()?
        .filter(|ip| !ip.is_unspecified());
    let mtu = merge("--mtu", req.mtu, MTU, parse_opt(o, MTU, "a number")?)?;
    let bridge = merge(
        "--bridge",
        req.bridge.clone(),
        BRIDGE_NAME,
        o.get(BRIDGE_NAME).cloned(),
    )?;
    let ipv6 = merge(
        "--ipv6",
        req.ipv6,
        ENABLE_IPV6,
        parse_opt(o, ENABLE_IPV6, "true or false")?,
    )?
    .unwrap_or(false);
    let policy = NetPolicy {
        icc: icc.unwrap_or(true),
        masquerade: masq.unwrap_or(true) && !internal && mode == GatewayMode::Nat,
        snat_ip,
        internal,
        gateway_mode: mode,
        host_binding_ipv4,
        mtu,
        bridge,
        ipv6,
    };
    check_consistent(&policy, masq)?;
    Ok(policy)
}

/// Settings that cannot hold together are refused rather than silently ignored.
fn check_consistent(p: &NetPolicy, masq_asked: Option<bool>) -> Result<(), ServiceError> {
    let routed = p.gateway_mode == GatewayMode::Routed;
    if p.internal && routed {
        return Err(invalid(
            "contradictory options: an internal network cannot use gateway mode routed \
             (nothing may reach it from outside)"
                .into(),
        ));
    }
    if masq_asked == Some(true) && (p.internal || routed) {
        let why = if p.internal {
            "an internal network"
        } else {
            "gateway mode routed"
        };
        return Err(invalid(format!(
            "contradictory options: masquerade on {why}"
        )));
    }
    if p.snat_ip.is_some() && !p.masquerade {
        return Err(invalid(
            "contradictory options: a masquerade address (--snat-ip / host_ipv4) needs \
             masquerade (not disabled, not internal, gateway mode nat)"
                .into(),
        ));
    }
    if p.internal && p.host_binding_ipv4.is_some() {
        return Err(invalid(
            "contradictory options: host_binding_ipv4 on an internal network (no ports are \
             published there)"
                .into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(opts: &[(&str, &str)]) -> CreateNetwork {
        CreateNetwork {
            name: "n".into(),
            options: opts
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            ..CreateNetwork::default()
        }
    }

    #[test]
    fn defaults() {
        let p = resolve(&req(&[])).unwrap();
        assert!(p.icc && p.masquerade && !p.internal);
        assert_eq!(p.gateway_mode, GatewayMode::Nat);
        assert_eq!((p.snat_ip, p.host_binding_ipv4, p.mtu), (None, None, None));
    }

    #[test]
    fn docker_keys() {
        let p = resolve(&req(&[
            (ICC, "false"),
            (MASQUERADE, "true"),
            (HOST_IPV4, "198.51.100.3"),
            (HOST_BINDING, "198.51.100.1"),
            (MTU, "1400"),
            (BRIDGE_NAME, "br-x"),
            ("com.docker.network.enable_ipv4", "true"),
        ]))
        .unwrap();
        assert!(!p.icc && p.masquerade);
        assert_eq!(p.snat_ip, Some(Ipv4Addr::new(198, 51, 100, 3)));
        assert_eq!(p.host_binding_ipv4, Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!((p.mtu, p.bridge.as_deref()), (Some(1400), Some("br-x")));
        let p = resolve(&req(&[(GATEWAY_MODE, "routed")])).unwrap();
        assert_eq!(p.gateway_mode, GatewayMode::Routed);
        assert!(!p.masquerade, "routed mode does not masquerade");
        let p = resolve(&req(&[(INTERNAL, "true")])).unwrap();
        assert!(p.internal && !p.masquerade);
        assert!(!p.ipv6);
        assert!(resolve(&req(&[(ENABLE_IPV6, "true")])).unwrap().ipv6);
        let mut r = req(&[(ENABLE_IPV6, "false")]);
        r.ipv6 = Some(true);
        assert!(resolve(&r).is_err(), "contradictory");
    }

    #[test]
    fn bad_and_contradictory() {
        for opts in [
            vec![("com.docker.network.bridge.frobnicate", "1")],
            vec![(ICC, "maybe")],
            vec![(MTU, "big")],
            vec![(GATEWAY_MODE, "isolated")],
            vec![(ENABLE_IPV6, "yes")],
            vec![(INTERNAL, "true"), (GATEWAY_MODE, "routed")],
            vec![(INTERNAL, "true"), (MASQUERADE, "true")],
            vec![(MASQUERADE, "false"), (HOST_IPV4, "198.51.100.3")],
            vec![(GATEWAY_MODE, "routed"), (HOST_IPV4, "198.51.100.3")],
            vec![(HOST_IPV4, "not-an-ip")],
        ] {
            let err = resolve(&req(&opts)).unwrap_err();
            assert_eq!(err.status(), 400, "{opts:?}: {err}");
        }
        let mut r = req(&[(ICC, "true")]);
        r.icc = Some(false);
        let err = resolve(&r).unwrap_err().to_string();
        assert!(
            err.contains("contradictory") && err.contains("--icc"),
            "{err}"
        );
        let mut r = req(&[]);
        r.gateway_mode = Some("bogus".into());
        assert_eq!(resolve(&r).unwrap_err().status(), 400);
    }
}
