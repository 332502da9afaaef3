//! Docker's `-p` syntax: `[HOSTIP:][HOSTPORT[-END]:]CPORT[-END][/tcp|/udp|/sctp]`.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use super::PortError;

/// What a bad protocol suffix is told.
pub const PROTO_CHOICES: &str = "protocol must be tcp, udp or sctp";

/// Transport protocol of a published port (Docker's names; SCTP as Docker publishes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
}

impl Proto {
    /// The IP protocol number, as the data path sees it.
    #[must_use]
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => netdriver_common::PROTO_TCP,
            Self::Udp => netdriver_common::PROTO_UDP,
            Self::Sctp => netdriver_common::PROTO_SCTP,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        })
    }
}

impl FromStr for Proto {
    type Err = PortError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self::Tcp),
            "udp" => Ok(Self::Udp),
            "sctp" => Ok(Self::Sctp),
            _ => Err(PortError::Syntax {
                spec: s.to_string(),
                reason: PROTO_CHOICES.into(),
            }),
        }
    }
}

/// One binding request, as Docker's `PortBinding`: a container port and the host ports it may
/// use. `host_port == 0` asks for an ephemeral port; `host_port < host_port_end` is a range of
/// which one free port is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    pub proto: Proto,
    /// `None` binds every host address.
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_port: u16,
}

/// Parses one `-p` value into the bindings it stands for (a container range gives one per port).
pub fn parse(spec: &str) -> Result<Vec<PortRequest>, PortError> {
    let err = |reason: &str| PortError::Syntax {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((rest, proto)) => (rest, proto.parse().map_err(|_| err(PROTO_CHOICES))?),
        None => (spec, Proto::Tcp),
    };
    let (host_ip, rest) = split_host_ip(rest).map_err(|r| err(&r))?;
    let (host, container) = match rest.rsplit_once(':') {
        Some((host, container)) => (Some(host), container),
        None if host_ip.is_some() => {
            return Err(err("a host address needs a host port part (may be empty)"));
        }
        None => (None, rest),
    };
    let (c_start, c_end) =
        parse_range(container, false).map_err(|r| err(&format!("container port: {r}")))?;
    let (h_start, h_end) = match host {
        None | Some("") => (0, 0),
        Some(h) => parse_range(h, true).map_err(|r| err(&format!("host port: {r}")))?,
    };
    expand(proto, host_ip, (h_start, h_end), (c_start, c_end)).map_err(|r| err(&r))
}

/// Splits an optional leading host address: `1.2.3.4:...` or `[::1]:...`.
fn split_host_ip(s: &str) -> Result<(Option<IpAddr>, &str), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, rest) = rest
            .split_once(']')
            .ok_or("unterminated '[' in host address")?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid host address {ip:?}"))?;
        if !ip.is_ipv6() {
            return Err("brackets are only for IPv6 host addresses".into());
        }
        let rest = rest
            .strip_prefix(':')
            .ok_or("expected ':' after the host address")?;
        return Ok((Some(ip), rest));
    }
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() == 3 {
        let ip = parts[0];
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("invalid host address {ip:?}"))?;
        if ip.is_ipv6() {
            return Err("IPv6 host addresses must be in brackets".into());
        }
        return Ok((Some(ip), &s[parts[0].len() + 1..]));
    }
    if parts.len() > 3 {
        return Err("too many ':' (IPv6 host addresses go in brackets)".into());
    }
    Ok((None, s))
}

/// Parses `N` or `N-M`; `allow_zero` permits port 0 (Docker: "any port").
fn parse_range(s: &str, allow_zero: bool) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        let n: u32 = p.parse().map_err(|_| format!("invalid port {p:?}"))?;
        match n {
            0 if allow_zero => Ok(0),
            1..=65535 => Ok(u16::try_from(n).expect("checked range")),
            _ => Err(format!("port {n} out of range 1-65535")),
        }
    };
    let (start, end) = if let Some((a, b)) = s.split_once('-') {
        (port(a)?, port(b)?)
    } else {
        let p = port(s)?;
        (p, p)
    };
    if end < start {
        return Err(format!("range {s} ends before it starts"));
    }
    Ok((start, end))
}

/// Turns a parsed spec into bindings, as Docker's `nat.ParsePortSpec` does.
fn expand(
    proto: Proto,
    host_ip: Option<IpAddr>,
    (h_start, h_end): (u16, u16),
    (c_start, c_end): (u16, u16),
) -> Result<Vec<PortRequest>, String> {
    let c_len = c_end - c_start;
    let h_len = h_end - h_start;
    let one = |container_port, host_port, host_port_end| PortRequest {
        proto,
        host_ip,
        host_port,
        host_port_end,
        container_port,
    };
    if h_start == 0 {
        return Ok((c_start..=c_end).map(|c| one(c, 0, 0)).collect());
    }
    if c_len == 0 {
        return Ok(vec![one(c_start, h_start, h_end)]);
    }
    if h_len != c_len {
        return Err(format!(
            "host range {h_start}-{h_end} and container range {c_start}-{c_end} differ in length"
        ));
    }
    Ok((0..=c_len)
        .map(|i| one(c_start + i, h_start + i, h_start + i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host_ip: Option<&str>, hp: u16, hpe: u16, cp: u16, proto: Proto) -> PortRequest {
        PortRequest {
            proto,
            host_ip: host_ip.map(|s| s.parse().unwrap()),
            host_port: hp,
            host_port_end: hpe,
            container_port: cp,
        }
    }

    #[test]
    fn container_port_only_is_ephemeral() {
        assert_eq!(parse("80").unwrap(), vec![req(None, 0, 0, 80, Proto::Tcp)]);
        assert_eq!(
            parse("53/udp").unwrap(),
            vec![req(None, 0, 0, 53, Proto::Udp)]
        );
    }

    #[test]
    fn sctp_as_docker_spells_it() {
        assert_eq!(
            parse("9000:9000/sctp").unwrap(),
            vec![req(None, 9000, 9000, 9000, Proto::Sctp)]
        );
        assert_eq!(
            parse("198.51.100.1:9000:80/SCTP").unwrap(),
            vec![req(Some("198.51.100.1"), 9000, 9000, 80, Proto::Sctp)]
        );
        assert_eq!(parse("80/sctp").unwrap()[0].proto.number(), 132);
        assert_eq!(Proto::Sctp.to_string(), "sctp");
        let err = parse("9000:80/sctpx").unwrap_err().to_string();
        assert!(err.contains("tcp, udp or sctp"), "{err}");
    }

    #[test]
    fn host_and_container() {
        assert_eq!(
            parse("8080:80").unwrap(),
            vec![req(None, 8080, 8080, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse("198.51.100.1:8080:80/UDP").unwrap(),
            vec![req(Some("198.51.100.1"), 8080, 8080, 80, Proto::Udp)]
        );
        assert_eq!(
            parse("198.51.100.1::80").unwrap(),
            vec![req(Some("198.51.100.1"), 0, 0, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse("[2001:db8::1]:8080:80").unwrap(),
            vec![req(Some("2001:db8::1"), 8080, 8080, 80, Proto::Tcp)]
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse("8000-8001:80-81").unwrap(),
            vec![
                req(None, 8000, 8000, 80, Proto::Tcp),
                req(None, 8001, 8001, 81, Proto::Tcp)
            ]
        );
        assert_eq!(
            parse("8000-8999:80").unwrap(),
            vec![req(None, 8000, 8999, 80, Proto::Tcp)]
        );
        assert_eq!(
            parse("80-81").unwrap(),
            vec![
                req(None, 0, 0, 80, Proto::Tcp),
                req(None, 0, 0, 81, Proto::Tcp)
            ]
        );
    }

    #[test]
    fn malformed() {
        for bad in [
            "",
            "abc",
            "0",
            "65536",
            "80/sctpx",
            "80/dccp",
            "8080:0",
            "8000-8002:80-81",
            "90-80",
            "1.2.3:80:80",
            "2001:db8::1:80:80",
            "[2001:db8::1:80:80",
            "[198.51.100.1]:80:80",
            "8080:80/",
            ":",
            "-1",
            "198.51.100.1:80",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}

/// Property tests over random `-p` strings: parsing never panics, and whatever it accepts
/// is well formed.
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    const PIECES: &[&str] = &[
        "0",
        "1",
        "80",
        "8080",
        "65535",
        "65536",
        "99999999999",
        "-",
        ":",
        "::",
        "/",
        "tcp",
        "udp",
        "UDP",
        "sctp",
        "[",
        "]",
        "[::1]",
        "198.51.100.1",
        "2001:db8::1",
        "1.2.3",
        " ",
        "",
        "\u{0}",
        "é",
        "-1",
    ];

    fn spec() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(PIECES), 0..8).prop_map(|p| p.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(20_000))]

        #[test]
        fn random_specs_parse_or_fail_cleanly(spec in spec()) {
            if let Ok(reqs) = parse(&spec) {
                prop_assert!(!reqs.is_empty());
                for r in reqs {
                    prop_assert!(r.container_port > 0);
                    prop_assert!(r.host_port <= r.host_port_end);
                    prop_assert!(r.host_port != 0 || r.host_port_end == 0);
                }
            }
        }

        #[test]
        fn any_string_is_safe(spec in any::<String>()) {
            let _ = parse(&spec);
        }
    }
}
