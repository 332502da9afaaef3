//! The Docker plugin protocol (libnetwork remote network driver + remote IPAM driver):
//! `POST /<Subsystem>.<Method>` with JSON bodies, on its own unix socket.
//!
//! dockerd sends no Content-Type and an empty body for argument-less calls, so bodies are
//! read as bytes. Success is 200 with a JSON body (`{}` when there is nothing to say);
//! failure is a 4xx/5xx with `{"Err": "message"}`, which dockerd reports for both drivers.

pub mod wire;

use std::sync::Arc;

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::post,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wire::Call;

use crate::service::{GLOBAL_SPACE, LOCAL_SPACE, Service};

type Shared = Arc<Service>;

/// What the plugin answers with (dockerd ignores it; this is its own test servers' value).
const MEDIA_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/{call}", post(handle))
        .fallback(|| async { reply_err(StatusCode::NOT_FOUND, "no such plugin call") })
        .method_not_allowed_fallback(|| async {
            reply_err(
                StatusCode::METHOD_NOT_ALLOWED,
                "plugin calls are POST requests",
            )
        })
        .with_state(service)
}

fn reply(value: &Value) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, MEDIA_TYPE)],
        value.to_string(),
    )
        .into_response()
}

fn reply_err(status: StatusCode, message: &str) -> Response {
    let body = json!({ "Err": message }).to_string();
    (status, [(CONTENT_TYPE, MEDIA_TYPE)], body).into_response()
}

async fn handle(State(s): State<Shared>, Path(call): Path<String>, body: Bytes) -> Response {
    tracing::debug!(call = %call, body = %String::from_utf8_lossy(&body), "plugin call");
    let result = match fixed_answer(&call) {
        Some(answer) => Ok(answer),
        None => match parse_call(&call, &body) {
            Ok(Some(c)) => s.docker(c).await.map_err(|e| {
                let status =
                    StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, format!("{call}: {}", e.message()))
            }),
            Ok(None) => Ok(json!({})),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(v) => reply(&v),
        Err((status, msg)) => {
            if status.is_server_error() {
                tracing::error!("plugin call failed: {msg}");
            } else {
                tracing::info!("plugin call refused: {msg}");
            }
            reply_err(status, &msg)
        }
    }
}

/// Calls whose answer does not depend on a body or on state.
fn fixed_answer(call: &str) -> Option<Value> {
    Some(match call {
        "Plugin.Activate" => json!({ "Implements": ["NetworkDriver", "IpamDriver"] }),
        "NetworkDriver.GetCapabilities" => {
            json!({ "Scope": "local", "ConnectivityScope": "local" })
        }
        "IpamDriver.GetCapabilities" => {
            json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false })
        }
        "IpamDriver.GetDefaultAddressSpaces" => json!({
            "LocalDefaultAddressSpace": LOCAL_SPACE,
            "GlobalDefaultAddressSpace": GLOBAL_SPACE,
        }),
        _ => return None,
    })
}

/// Every request body is a JSON object (serde would also take a struct as an array).
fn parse<T: DeserializeOwned>(call: &str, body: &[u8]) -> Result<T, (StatusCode, String)> {
    let malformed = |e: String| {
        (
            StatusCode::BAD_REQUEST,
            format!("{call}: malformed request: {e}"),
        )
    };
    match serde_json::from_slice::<Value>(body).map_err(|e| malformed(e.to_string()))? {
        v @ Value::Object(_) => serde_json::from_value(v).map_err(|e| malformed(e.to_string())),
        other => Err(malformed(format!("expected a JSON object, got {other}"))),
    }
}

/// The request of a stateful call; `None` for calls that only need a well-formed body and
/// have nothing to do for a local driver (discovery, swarm allocation).
fn parse_call(call: &str, body: &[u8]) -> Result<Option<Call>, (StatusCode, String)> {
    Ok(Some(match call {
        "NetworkDriver.CreateNetwork" => Call::CreateNetwork(parse(call, body)?),
        "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork(parse(call, body)?),
        "NetworkDriver.CreateEndpoint" => Call::CreateEndpoint(parse(call, body)?),
        "NetworkDriver.EndpointOperInfo" => Call::EndpointOperInfo(parse(call, body)?),
        "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint(parse(call, body)?),
        "NetworkDriver.Join" => Call::Join(parse(call, body)?),
        "NetworkDriver.Leave" => Call::Leave(parse(call, body)?),
        "NetworkDriver.ProgramExternalConnectivity" => {
            Call::ProgramExternalConnectivity(parse(call, body)?)
        }
        "NetworkDriver.RevokeExternalConnectivity" => {
            Call::RevokeExternalConnectivity(parse(call, body)?)
        }
        "IpamDriver.RequestPool" => Call::RequestPool(parse(call, body)?),
        "IpamDriver.ReleasePool" => Call::ReleasePool(parse(call, body)?),
        "IpamDriver.RequestAddress" => Call::RequestAddress(parse(call, body)?),
        "IpamDriver.ReleaseAddress" => Call::ReleaseAddress(parse(call, body)?),
        "NetworkDriver.DiscoverNew" | "NetworkDriver.DiscoverDelete" => {
            parse::<serde_json::Map<String, Value>>(call, body)?;
            return Ok(None);
        }
        // Swarm-scope allocation: never sent to a local-scope driver; nothing to allocate.
        "NetworkDriver.AllocateNetwork" | "NetworkDriver.FreeNetwork" => {
            parse::<wire::NetworkRequest>(call, body)?;
            return Ok(None);
        }
        _ => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("{call}: no such plugin call"),
            ));
        }
    }))
}
