//! The partner FHIR R4 API (DESIGN §6; HL7 FHIR R4 RESTful API §3.1.0, search §3.1.1,
//! `$everything` §Patient-operation-everything), on the mTLS partner listener. Every request needs
//! a bearer token bound to the connection's client certificate (RFC 8705); a token in the query
//! string is refused (RFC 6750 §2.3 is not offered: FAPI). Consent is checked per request in
//! [`crate::domain::access`].
//!
//! - `GET /fhir/metadata` → CapabilityStatement (no token needed)
//! - `GET /fhir/Patient?_count&_after` → the consenting persons
//! - `GET /fhir/Patient/{id}` and `GET /fhir/{type}/{id}`
//! - `GET /fhir/{type}?patient=…&category=…&code=system|code&date=geYYYY-MM-DD&_count&_offset`
//! - `GET /fhir/Patient/{id}/$everything`
//!
//! Errors are OperationOutcomes: 400 bad parameters, 401 token, 404 not found or not consented
//! (the same answer), 429 with `Retry-After`, 503 store or audit unavailable.

use super::partner::{ClientCertificate, PartnerState};
use crate::domain::access::{
    AccessError, EverythingBundle, MAX_PAGE, SearchParams, Served, ServedResource,
};
use crate::domain::consent::Category;
use crate::domain::partner_auth::AuthenticateError;
use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;

/// FHIR JSON media type.
pub const FHIR_JSON: &str = "application/fhir+json";
/// Resource types the API serves.
pub const SUPPORTED_TYPES: [&str; 10] = [
    "Patient",
    "Observation",
    "DiagnosticReport",
    "Organization",
    "Specimen",
    "Condition",
    "MedicationStatement",
    "QuestionnaireResponse",
    "Composition",
    "DocumentReference",
];
/// Longest query string accepted.
pub const MAX_QUERY_BYTES: usize = 2048;
/// Most query parameters accepted.
pub const MAX_QUERY_PARAMS: usize = 16;
/// Default page size.
pub const DEFAULT_PAGE: i64 = 50;

/// The FHIR routes (merged into the partner router).
pub fn routes() -> axum::Router<PartnerState> {
    axum::Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Patient/{id}/$everything", get(everything))
        .route("/fhir/{resource_type}", get(search))
        .route("/fhir/{resource_type}/{id}", get(read))
}

/// An OperationOutcome response.
pub fn outcome(status: StatusCode, code: &str, diagnostics: &str) -> Response {
    let body = serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": "error", "code": code, "diagnostics": diagnostics }]
    });
    fhir_response(status, body.to_string())
}

fn fhir_response(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let body: axum::body::Body = body.into();
    let mut r = (status, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    r
}

fn not_found() -> Response {
    outcome(StatusCode::NOT_FOUND, "not-found", "resource not found")
}

fn access_error(e: AccessError) -> Response {
    match e {
        AccessError::NotFound => not_found(),
        AccessError::BadRequest(m) => outcome(StatusCode::BAD_REQUEST, "invalid", &m),
        AccessError::AuditUnavailable(reason) => {
            tracing::error!(%reason, "audit write failed: access refused");
            outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "audit trail unavailable",
            )
        }
        AccessError::Store(e) => {
            tracing::error!(error = %e, "store failed");
            outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "unavailable")
        }
    }
}

/// Checks the token, its certificate binding and the rate limit; the client id on success.
pub(super) async fn authorize(
    state: &PartnerState,
    headers: &HeaderMap,
    certificate: Option<&Extension<ClientCertificate>>,
    query: Option<&str>,
) -> Result<String, Response> {
    if let Some(q) = query {
        if q.len() > MAX_QUERY_BYTES {
            return Err(outcome(
                StatusCode::BAD_REQUEST,
                "too-costly",
                "query too long",
            ));
        }
        if form_pairs(q).any(|(k, _)| k == "access_token") {
            return Err(outcome(
                StatusCode::BAD_REQUEST,
                "security",
                "access tokens are accepted only in the Authorization header",
            ));
        }
    }
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let certificate = certificate.map(|Extension(c)| c.0.as_ref());
    let binding = match state.auth.authenticate(authorization, certificate).await {
        Ok(b) => b,
        Err(AuthenticateError::Access(e)) => {
            tracing::info!(error = %e, "partner token refused");
            let mut r = outcome(StatusCode::UNAUTHORIZED, "login", "invalid token");
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
            return Err(r);
        }
        Err(AuthenticateError::Store(e)) => {
            tracing::error!(error = %e, "token store failed");
            return Err(outcome(
                StatusCode::SERVICE_UNAVAILABLE,
                "transient",
                "unavailable",
            ));
        }
    };
    let now = state.access_now_ms();
    if let Err(retry_after) =
        state
            .limiter
            .take(&binding.client_id, state.rate_for(&binding.client_id), now)
    {
        let mut r = outcome(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "rate limit exceeded",
        );
        if let Ok(v) = HeaderValue::from_str(&retry_after.to_string()) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(r);
    }
    Ok(binding.client_id)
}

/// `key=value` pairs of a query string, percent-decoded (`application/x-www-form-urlencoded`).
fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// The first day a partial date (`YYYY`, `YYYY-MM`, `YYYY-MM-DD`) covers.
fn first_day(d: &str) -> String {
    match d.len() {
        4 => format!("{d}-01-01"),
        7 => format!("{d}-01"),
        _ => d.to_owned(),
    }
}

/// The last day a partial date covers (days past the month's end compare the same).
fn last_day(d: &str) -> String {
    match d.len() {
        4 => format!("{d}-12-31"),
        7 => format!("{d}-31"),
        _ => d.to_owned(),
    }
}

fn valid_id(id: &str) -> bool {
    // FHIR id: [A-Za-z0-9\-\.]{1,64}
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_date(d: &str) -> bool {
    let b = d.as_bytes();
    match b.len() {
        4 => b.iter().all(u8::is_ascii_digit),
        7 => b[4] == b'-' && b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit),
        10 => {
            b[4] == b'-'
                && b[7] == b'-'
                && b[..4]
                    .iter()
                    .chain(&b[5..7])
                    .chain(&b[8..])
                    .all(u8::is_ascii_digit)
        }
        _ => false,
    }
}

/// A searchset Bundle written as text around the stored JSON (no re-serialisation); `base` is the
/// FHIR base URL for `fullUrl`.
pub fn searchset(base: &str, served: &Served, next: Option<String>) -> String {
    let size: usize = served.iter().map(|r| r.json.len() + base.len() + 80).sum();
    let mut out = String::with_capacity(size + 256);
    out.push_str("{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":");
    out.push_str(&served.len().to_string());
    if let Some(next) = next {
        out.push_str(",\"link\":[{\"relation\":\"next\",\"url\":");
        out.push_str(&serde_json::Value::String(next).to_string());
        out.push_str("}]");
    }
    if served.is_empty() {
        // FHIR JSON: an empty array is not allowed; the element is left out.
        out.push('}');
        return out;
    }
    out.push_str(",\"entry\":[");
    for (i, r) in served.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_entry(&mut out, base, r);
    }
    out.push_str("]}");
    out
}

/// The `$everything` searchset: the Patient's entry, then one entry per resource.
pub fn everything_searchset(base: &str, bundle: &EverythingBundle) -> String {
    let size: usize = bundle
        .resources()
        .map(|(r, json)| r.len() + json.len() + base.len() + 64)
        .sum();
    let mut out = String::with_capacity(size + bundle.patient.json.len() + 256);
    out.push_str("{\"resourceType\":\"Bundle\",\"type\":\"searchset\",\"total\":");
    out.push_str(&bundle.len().to_string());
    out.push_str(",\"entry\":[");
    push_entry(&mut out, base, &bundle.patient);
    // The base's JSON form without its closing quote, written once.
    let quoted_base = serde_json::Value::String(format!("{base}/")).to_string();
    let quoted_base = quoted_base.strip_suffix('"').unwrap_or(&quoted_base);
    for (reference, json) in bundle.resources() {
        out.push_str(",{\"fullUrl\":");
        out.push_str(quoted_base);
        if reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-.".contains(&b))
        {
            out.push_str(reference);
        } else {
            let quoted = serde_json::Value::String(reference.to_owned()).to_string();
            out.push_str(quoted.get(1..quoted.len() - 1).unwrap_or_default());
        }
        out.push_str("\",\"resource\":");
        out.push_str(json);
        out.push_str(",\"search\":{\"mode\":\"match\"}}");
    }
    out.push_str("]}");
    out
}

/// One searchset entry (`fullUrl`, `resource`, `search.mode` match).
fn push_entry(out: &mut String, base: &str, r: &ServedResource) {
    out.push_str("{\"fullUrl\":");
    out.push_str(&serde_json::Value::String(format!("{base}/{}", r.reference)).to_string());
    out.push_str(",\"resource\":");
    out.push_str(&r.json);
    out.push_str(",\"search\":{\"mode\":\"match\"}}");
}

async fn metadata(State(state): State<PartnerState>) -> Response {
    let resources: Vec<serde_json::Value> = SUPPORTED_TYPES
        .iter()
        .map(|t| {
            let mut r = serde_json::json!({
                "type": t,
                "interaction": [{ "code": "read" }, { "code": "search-type" }],
            });
            if *t != "Patient" {
                r["searchParam"] = serde_json::json!([
                    { "name": "patient", "type": "reference" },
                    { "name": "category", "type": "token" },
                    { "name": "code", "type": "token" },
                    { "name": "date", "type": "date" }
                ]);
            } else {
                r["operation"] = serde_json::json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }]);
            }
            r
        })
        .collect();
    let body = serde_json::json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-21",
        "kind": "instance",
        "software": { "name": "iphr-gateway", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "iPHR gateway partner API", "url": state.fhir_base },
        "fhirVersion": "4.0.1",
        "format": ["json"],
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "rest": [{
            "mode": "server",
            "operation": [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
            }],
            "security": {
                "cors": false,
                "service": [{ "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "OAuth"
                }]}],
                "description": "mTLS (client certificate registered per partner) and OAuth 2.0 client credentials with private_key_jwt; access tokens bound to the client certificate (RFC 8705). Every request is checked against the worker's consent."
            },
            "resource": resources
        }]
    });
    fhir_response(StatusCode::OK, body.to_string())
}

async fn read(
    State(state): State<PartnerState>,
    Path((resource_type, id)): Path<(String, String)>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    let client = match authorize(&state, &headers, certificate.as_ref(), query.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !SUPPORTED_TYPES.contains(&resource_type.as_str()) || !valid_id(&id) {
        return not_found();
    }
    match state.access.read(&client, &resource_type, &id).await {
        Ok(ServedResource { json, .. }) => fhir_response(StatusCode::OK, json),
        Err(e) => access_error(e),
    }
}

async fn everything(
    State(state): State<PartnerState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    let client = match authorize(&state, &headers, certificate.as_ref(), query.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !valid_id(&id) {
        return not_found();
    }
    match state.access.everything(&client, &id).await {
        Ok(bundle) => fhir_response(
            StatusCode::OK,
            bundle.rendered(|b| Bytes::from(everything_searchset(&state.fhir_base, b))),
        ),
        Err(e) => access_error(e),
    }
}

async fn search(
    State(state): State<PartnerState>,
    Path(resource_type): Path<String>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    let client = match authorize(&state, &headers, certificate.as_ref(), query.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !SUPPORTED_TYPES.contains(&resource_type.as_str()) {
        return not_found();
    }
    let pairs: Vec<(String, String)> = form_pairs(query.as_deref().unwrap_or("")).collect();
    if pairs.len() > MAX_QUERY_PARAMS {
        return outcome(StatusCode::BAD_REQUEST, "too-costly", "too many parameters");
    }
    let mut p = SearchParams {
        resource_type: resource_type.clone(),
        count: DEFAULT_PAGE,
        ..SearchParams::default()
    };
    let mut after = String::new();
    for (k, v) in &pairs {
        match k.as_str() {
            "patient" | "subject" | "_id" if resource_type == "Patient" || k != "_id" => {
                let v = v.strip_prefix("Patient/").unwrap_or(v);
                if !valid_id(v) {
                    return not_found();
                }
                p.patient = v.to_owned();
            }
            "category" => {
                if let Ok(c) = v.parse::<Category>() {
                    p.categories.get_or_insert_with(Vec::new).push(c);
                } else {
                    let code = v.rsplit('|').next().unwrap_or(v);
                    p.fhir_category = Some(code.chars().take(64).collect());
                }
            }
            "code" => p.code = Some(v.chars().take(256).collect()),
            "date" => {
                let (prefix, date) = match v.get(..2) {
                    Some(pre @ ("ge" | "le" | "eq" | "gt" | "lt")) => (pre, &v[2..]),
                    _ => ("eq", v.as_str()),
                };
                if !valid_date(date) {
                    return outcome(StatusCode::BAD_REQUEST, "invalid", "date: YYYY[-MM[-DD]]");
                }
                match prefix {
                    "ge" | "gt" => p.date_from = Some(first_day(date)),
                    "le" | "lt" => p.date_to = Some(last_day(date)),
                    _ => {
                        p.date_from = Some(first_day(date));
                        p.date_to = Some(last_day(date));
                    }
                }
            }
            "_count" => match v.parse::<i64>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => p.count = n,
                _ => {
                    return outcome(
                        StatusCode::BAD_REQUEST,
                        "too-costly",
                        &format!("_count must be 1..={MAX_PAGE}"),
                    );
                }
            },
            "_offset" => match v.parse::<i64>() {
                Ok(n) if (0..=1_000_000).contains(&n) => p.offset = n,
                _ => return outcome(StatusCode::BAD_REQUEST, "invalid", "_offset"),
            },
            "_after" if resource_type == "Patient" => {
                if !valid_id(v) {
                    return outcome(StatusCode::BAD_REQUEST, "invalid", "_after");
                }
                after = v.clone();
            }
            "_format" if v == "json" || v == FHIR_JSON => {}
            other => {
                return outcome(
                    StatusCode::BAD_REQUEST,
                    "not-supported",
                    &format!("unsupported search parameter {:?}", truncate(other)),
                );
            }
        }
    }
    if resource_type == "Patient" && p.patient.is_empty() {
        return match state.access.consenting(&client, p.count, &after).await {
            Ok(persons) => {
                let mut served = Vec::with_capacity(persons.len());
                for person in &persons {
                    match state.access.patient(&client, person).await {
                        Ok(r) => served.push(r),
                        Err(AccessError::NotFound) => {}
                        Err(e) => return access_error(e),
                    }
                }
                let next = (i64::try_from(persons.len()).unwrap_or(0) == p.count)
                    .then(|| persons.last())
                    .flatten()
                    .map(|last| {
                        format!(
                            "{}/Patient?_count={}&_after={last}",
                            state.fhir_base, p.count
                        )
                    });
                fhir_response(StatusCode::OK, searchset(&state.fhir_base, &served, next))
            }
            Err(e) => access_error(e),
        };
    }
    if p.patient.is_empty() {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "searches need patient=",
        );
    }
    match state.access.search(&client, &p).await {
        Ok(served) => {
            let next = (i64::try_from(served.len()).unwrap_or(0) == p.count).then(|| {
                let mut q = form_urlencoded::Serializer::new(String::new());
                q.extend_pairs(pairs.iter().filter(|(k, _)| k != "_offset"));
                q.append_pair("_offset", &(p.offset + p.count).to_string());
                format!("{}/{}?{}", state.fhir_base, resource_type, q.finish())
            });
            fhir_response(StatusCode::OK, searchset(&state.fhir_base, &served, next))
        }
        Err(e) => access_error(e),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_searchset_has_no_entry_array() {
        let empty = searchset("https://x/fhir", &Vec::new(), None);
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert_eq!(v["total"], 0);
        assert!(v.get("entry").is_none(), "{empty}");
        let one = vec![ServedResource {
            reference: "Patient/p1".into(),
            json: r#"{"resourceType":"Patient","id":"p1"}"#.into(),
        }];
        let v: serde_json::Value =
            serde_json::from_str(&searchset("https://x/fhir", &one, Some("n\"ext".into())))
                .unwrap();
        assert_eq!(v["entry"][0]["fullUrl"], "https://x/fhir/Patient/p1");
        assert_eq!(v["link"][0]["url"], "n\"ext");
    }

    #[test]
    fn query_decoding_and_validation() {
        let pairs: Vec<_> = form_pairs("a=1&code=http%3A%2F%2Fx%7C3&b=%zz&c=%4").collect();
        assert_eq!(pairs[1].1, "http://x|3");
        assert_eq!(pairs[2].1, "%zz");
        assert_eq!(pairs[3].1, "%4");
        let encoded = form_urlencoded::Serializer::new(String::new())
            .append_pair("k", "a b|c/ü")
            .finish();
        assert_eq!(form_pairs(&encoded).next().unwrap().1, "a b|c/ü");
        assert!(valid_id("abc-1.2"));
        assert!(!valid_id("a/b"));
        assert!(!valid_id(&"x".repeat(65)));
        assert!(valid_date("2024-05-01") && valid_date("2024") && valid_date("2024-05"));
        assert!(!valid_date("2024-5-1") && !valid_date("20240501"));
    }
}
