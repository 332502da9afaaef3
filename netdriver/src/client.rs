//! A small blocking HTTP/1.1 client for the daemon's unix socket (the CLI's only transport).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

/// Endpoint creation moves interfaces between namespaces; give it time.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Sends one request; returns the status and the JSON body (`Null` when empty).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the netdriver daemon at {} (is it running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: netdriver\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .context("reading the daemon's answer")?;
    parse_response(&raw)
}

/// Sends a request and turns a non-2xx answer into an error carrying the daemon's message.
pub fn call(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let (status, value) = request(socket, method, path, body)?;
    if (200..300).contains(&status) {
        return Ok(value);
    }
    let msg = value
        .get("error")
        .and_then(Value::as_str)
        .map_or_else(|| value.to_string(), str::to_string);
    Err(anyhow!("{msg}"))
}

/// A name as a URL path segment: the characters names may hold pass, others are escaped.
#[must_use]
pub fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn parse_response(raw: &[u8]) -> Result<(u16, Value)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| anyhow!("truncated HTTP answer"))?;
    let head = std::str::from_utf8(&raw[..split]).context("HTTP head is not UTF-8")?;
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad HTTP status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((status, Value::Null));
    }
    let value = serde_json::from_slice(&body).context("the daemon's answer is not JSON")?;
    Ok((status, value))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or_else(|| anyhow!("bad chunk"))?;
        let size_text = std::str::from_utf8(&data[..eol])?
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let size = usize::from_str_radix(size_text, 16).context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let (s, v) =
            parse_response(b"HTTP/1.1 201 Created\r\ncontent-length: 9\r\n\r\n{\"a\":1}\n")
                .unwrap();
        assert_eq!((s, v), (201, serde_json::json!({"a": 1})));
        let (s, v) =
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2\r\n2]\r\n0\r\n\r\n").unwrap();
        assert_eq!((s, v), (200, serde_json::json!([1, 2])));
        let (s, v) = parse_response(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!((s, v), (204, Value::Null));
        assert!(parse_response(b"HTTP/1.1 200").is_err());
    }
}
