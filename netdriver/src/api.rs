//! The daemon's API: JSON over HTTP on a unix socket. Every error is a 4xx/5xx with
//! `{"error": "..."}`.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::JsonRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use crate::{
    model::{CreateEndpoint, CreateNetwork, ErrorBody},
    service::{Service, ServiceError},
};

type Shared = Arc<Service>;

/// The routes, documented in the README.
pub fn router(service: Shared) -> Router {
    Router::new()
        .route("/v1/networks", get(list_networks).post(create_network))
        .route(
            "/v1/networks/{name}",
            get(inspect_network).delete(remove_network),
        )
        .route("/v1/endpoints", get(list_endpoints).post(create_endpoint))
        .route(
            "/v1/endpoints/{name}",
            get(inspect_endpoint).delete(remove_endpoint),
        )
        .route("/v1/endpoints/{name}/check", get(check_endpoint))
        .route("/v1/ports", get(list_ports))
        .route("/v1/status", get(status))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such API path".into()) })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this path".into(),
            )
        })
        .with_state(service)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(ErrorBody { error: message })).into_response()
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = self.message();
        if status.is_server_error() {
            tracing::error!("request failed: {message}");
        }
        error(status, message)
    }
}

/// Malformed bodies get a JSON 400 rather than axum's plain-text rejection.
#[expect(
    clippy::result_large_err,
    reason = "the error is the handler's response"
)]
fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, Response> {
    json.map(|Json(v)| v).map_err(|e| {
        let status = if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::BAD_REQUEST
        };
        error(status, format!("malformed request: {}", e.body_text()))
    })
}

fn ok<T: Serialize>(status: StatusCode, value: T) -> Response {
    (status, Json(value)).into_response()
}

async fn list_networks(State(s): State<Shared>) -> Response {
    ok(StatusCode::OK, s.networks().await)
}

async fn create_network(
    State(s): State<Shared>,
    req: Result<Json<CreateNetwork>, JsonRejection>,
) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match s.create_network(req).await {
        Ok(n) => ok(StatusCode::CREATED, n),
        Err(e) => e.into_response(),
    }
}

async fn inspect_network(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.network(&name).await {
        Ok(n) => ok(StatusCode::OK, n),
        Err(e) => e.into_response(),
    }
}

async fn remove_network(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.remove_network(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_endpoints(State(s): State<Shared>) -> Response {
    ok(StatusCode::OK, s.endpoints().await)
}

async fn create_endpoint(
    State(s): State<Shared>,
    req: Result<Json<CreateEndpoint>, JsonRejection>,
) -> Response {
    let req = match body(req) {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match s.create_endpoint(req).await {
        Ok(e) => ok(StatusCode::CREATED, e),
        Err(e) => e.into_response(),
    }
}

async fn inspect_endpoint(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.endpoint(&name).await {
        Ok(e) => ok(StatusCode::OK, e),
        Err(e) => e.into_response(),
    }
}

async fn remove_endpoint(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.remove_endpoint(&name).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn check_endpoint(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    match s.check_endpoint(&name).await {
        Ok(c) => ok(StatusCode::OK, c),
        Err(e) => e.into_response(),
    }
}

async fn list_ports(State(s): State<Shared>) -> Response {
    ok(StatusCode::OK, s.ports().await)
}

async fn status(State(s): State<Shared>) -> Response {
    match s.status().await {
        Ok(st) => ok(StatusCode::OK, st),
        Err(e) => e.into_response(),
    }
}
