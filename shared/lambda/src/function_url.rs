//! What the function-URL functions (the event intake, the deal robot) share around their
//! pure parsers: the request's parts as the domain reads them, and small JSON answers.

use b24_domain::event::IntakeRequest;
use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

/// Runs `parse` over the request as [`IntakeRequest`]: method, headers, query and the
/// body (lambda_http has already decoded a function URL's base64).
pub fn read_request<T>(request: &Request, parse: impl FnOnce(&IntakeRequest) -> T) -> T {
    let headers: Vec<(&str, &[u8])> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    parse(&IntakeRequest {
        method: request.method().as_str(),
        headers: &headers,
        query: request.uri().query(),
        body: request.body().as_ref(),
        body_is_base64: false,
    })
}

/// A small JSON answer; no header comes from the request.
pub fn answer(status: StatusCode, body: &Value) -> Response<Body> {
    let mut response = Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A refusal with its HTTP status and `{"error": reason}`; a 405 says `Allow: POST`.
pub fn refusal(status: u16, reason: &str) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = answer(status, &json!({ "error": reason }));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// 202 `{"status": "queued"}`: the message is on its queue.
pub fn queued() -> Response<Body> {
    answer(StatusCode::ACCEPTED, &json!({"status": "queued"}))
}

/// 503 `{"error": text}`: the queue refused; the caller has logged what to replay.
pub fn queue_unavailable(text: &str) -> Response<Body> {
    answer(StatusCode::SERVICE_UNAVAILABLE, &json!({ "error": text }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_json_and_a_405_names_post() {
        let response = refusal(405, "only POST");
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(refusal(401, "bad token").headers().get(header::ALLOW), None);
        let body: Value = serde_json::from_slice(queued().body().as_ref()).unwrap();
        assert_eq!(body, json!({"status": "queued"}));
        assert_eq!(queue_unavailable("down").status(), 503);
    }

    #[test]
    fn reads_the_request_as_the_domain_does() {
        let request = lambda_http::http::Request::builder()
            .method("POST")
            .uri("https://fn.lambda-url.test/?route=a&secret=b")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from("document_id[0]=crm"))
            .unwrap();
        let seen = read_request(&request, |parts| {
            (
                parts.method.to_string(),
                parts.query.map(str::to_string),
                parts.body.to_vec(),
                parts.headers.len(),
            )
        });
        assert_eq!(
            seen,
            (
                "POST".to_string(),
                Some("route=a&secret=b".to_string()),
                b"document_id[0]=crm".to_vec(),
                1
            )
        );
    }
}
