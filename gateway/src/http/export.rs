//! FHIR Bulk Data export (HL7 FHIR Bulk Data Access 2.0, "system level" kick-off) on the partner
//! listener: `GET /fhir/$export` starts a job over every person whose consent to the calling
//! partner is in force (each person's part consent-checked and audited like `$everything`);
//! `GET /fhir/$export-status/{job}` answers 202 with `X-Progress` while it runs and 200 with the
//! manifest when done; `GET /fhir/$export-file/{job}/{type}` serves the NDJSON of one resource type;
//! `DELETE` on the status URL cancels and forgets the job. Jobs and files are kept in this gateway
//! process's memory for [`JOB_TTL`]; only the partner that started a job can see it. A person who
//! erases their record after a job started (security-scenarios K1, `docs/privacy.md`) is left out
//! of every file served from then on, whichever gateway took the erasure.

use super::fhir::{authorize, outcome};
use super::partner::{ClientCertificate, PartnerState};
use crate::domain::access::AccessError;
use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a finished job's files are kept.
pub const JOB_TTL: Duration = Duration::from_secs(3600);
/// Most jobs kept per gateway process (older finished ones are dropped first).
pub const MAX_JOBS: usize = 64;

#[derive(Debug)]
enum State_ {
    Running {
        done: usize,
    },
    Done {
        /// NDJSON lines by resource type, then by person (so that an erased person's lines can
        /// be left out when a file is served).
        files: BTreeMap<String, BTreeMap<String, String>>,
        at: Instant,
    },
    Failed(String),
}

#[derive(Debug)]
struct Job {
    client: String,
    started: Instant,
    /// When the job started (ms since the epoch, the gateway's clock).
    started_ms: i64,
    request: String,
    transaction_time: String,
    state: State_,
}

/// The export jobs of this process.
#[derive(Debug, Default, Clone)]
pub struct ExportJobs(Arc<Mutex<HashMap<String, Job>>>);

impl ExportJobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Job>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn prune(&self) {
        let mut jobs = self.lock();
        jobs.retain(|_, j| match &j.state {
            State_::Done { at, .. } => at.elapsed() < JOB_TTL,
            _ => j.started.elapsed() < JOB_TTL,
        });
    }
}

/// The export routes (merged into the partner router).
pub fn routes() -> axum::Router<PartnerState> {
    axum::Router::new()
        .route("/fhir/$export", axum::routing::get(kick_off))
        .route(
            "/fhir/$export-status/{job}",
            axum::routing::get(status).delete(cancel),
        )
        .route(
            "/fhir/$export-file/{job}/{resource_type}",
            axum::routing::get(file),
        )
}

async fn kick_off(
    State(state): State<PartnerState>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    let client = match authorize(&state, &headers, certificate.as_ref(), query.as_deref()).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if query.as_deref().is_some_and(|q| !q.is_empty()) {
        return outcome(
            StatusCode::BAD_REQUEST,
            "not-supported",
            "export parameters (_type, _since, _outputFormat) are not supported",
        );
    }
    let respond_async = headers
        .get("prefer")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "respond-async"));
    if !respond_async {
        return outcome(
            StatusCode::BAD_REQUEST,
            "required",
            "Prefer: respond-async is required",
        );
    }
    state.exports.prune();
    if state.exports.lock().len() >= MAX_JOBS {
        let mut r = outcome(
            StatusCode::TOO_MANY_REQUESTS,
            "throttled",
            "too many export jobs",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return r;
    }
    let id: [u8; 16] = match crate::domain::random_bytes(&ring::rand::SystemRandom::new()) {
        Ok(b) => b,
        Err(_) => {
            return outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "unavailable");
        }
    };
    let job: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let now_ms = state.access_now_ms();
    state.exports.lock().insert(
        job.clone(),
        Job {
            client: client.clone(),
            started: Instant::now(),
            started_ms: now_ms,
            request: format!("{}/$export", state.fhir_base),
            transaction_time: rfc3339(now_ms),
            state: State_::Running { done: 0 },
        },
    );
    tokio::spawn(run(state.clone(), client, job.clone()));
    let mut r = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{}/$export-status/{job}", state.fhir_base)) {
        r.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    r
}

/// Builds the files: every consenting person, page by page, grouped by resource type.
async fn run(state: PartnerState, client: String, job: String) {
    let mut files: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut after = String::new();
    let mut done = 0;
    loop {
        if !state.exports.lock().contains_key(&job) {
            return; // cancelled
        }
        let persons = match state.access.consenting(&client, 500, &after).await {
            Ok(p) => p,
            Err(e) => return fail(&state, &job, &e),
        };
        for person in &persons {
            match state.access.export_person(&client, person).await {
                Ok(bundle) => {
                    for (reference, json) in bundle.all() {
                        let ty = reference.split('/').next().unwrap_or("Unknown").to_owned();
                        let f = files
                            .entry(ty)
                            .or_default()
                            .entry(person.clone())
                            .or_default();
                        f.push_str(json);
                        f.push('\n');
                    }
                }
                // Revoked between the listing and the read: left out.
                Err(AccessError::NotFound) => {}
                Err(e) => return fail(&state, &job, &e),
            }
            done += 1;
        }
        if let Some(j) = state.exports.lock().get_mut(&job) {
            j.state = State_::Running { done };
        }
        match persons.last() {
            Some(last) if persons.len() == 500 => after.clone_from(last),
            _ => break,
        }
    }
    if let Some(j) = state.exports.lock().get_mut(&job) {
        j.state = State_::Done {
            files,
            at: Instant::now(),
        };
    }
}

fn fail(state: &PartnerState, job: &str, e: &AccessError) {
    tracing::error!(error = %e, job, "bulk export failed");
    if let Some(j) = state.exports.lock().get_mut(job) {
        j.state = State_::Failed("export failed; no data was served".into());
    }
}

/// RFC 3339 UTC time of `ms` since the epoch (empty when out of range).
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn owned_job(
    state: &PartnerState,
    headers: &HeaderMap,
    certificate: Option<&Extension<ClientCertificate>>,
    query: Option<&str>,
    job: &str,
) -> Result<String, Response> {
    let client = authorize(state, headers, certificate, query).await?;
    let owned = state
        .exports
        .lock()
        .get(job)
        .is_some_and(|j| j.client == client);
    if owned {
        Ok(client)
    } else {
        Err(outcome(
            StatusCode::NOT_FOUND,
            "not-found",
            "no such export",
        ))
    }
}

async fn status(
    State(state): State<PartnerState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = owned_job(
        &state,
        &headers,
        certificate.as_ref(),
        query.as_deref(),
        &job,
    )
    .await
    {
        return r;
    }
    let jobs = state.exports.lock();
    let Some(j) = jobs.get(&job) else {
        return outcome(StatusCode::NOT_FOUND, "not-found", "no such export");
    };
    match &j.state {
        State_::Running { done } => {
            let mut r = StatusCode::ACCEPTED.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("{done} persons exported")) {
                r.headers_mut().insert("x-progress", v);
            }
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
        State_::Failed(m) => outcome(StatusCode::INTERNAL_SERVER_ERROR, "exception", m),
        State_::Done { files, .. } => {
            let output: Vec<serde_json::Value> = files
                .keys()
                .map(|ty| {
                    serde_json::json!({
                        "type": ty,
                        "url": format!("{}/$export-file/{job}/{ty}", state.fhir_base),
                    })
                })
                .collect();
            let body = serde_json::json!({
                "transactionTime": j.transaction_time,
                "request": j.request,
                "requiresAccessToken": true,
                "output": output,
                "error": [],
            });
            let mut r = (StatusCode::OK, body.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
    }
}

async fn cancel(
    State(state): State<PartnerState>,
    Path(job): Path<String>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = owned_job(
        &state,
        &headers,
        certificate.as_ref(),
        query.as_deref(),
        &job,
    )
    .await
    {
        return r;
    }
    state.exports.lock().remove(&job);
    StatusCode::ACCEPTED.into_response()
}

async fn file(
    State(state): State<PartnerState>,
    Path((job, resource_type)): Path<(String, String)>,
    headers: HeaderMap,
    certificate: Option<Extension<ClientCertificate>>,
    RawQuery(query): RawQuery,
) -> Response {
    if let Err(r) = owned_job(
        &state,
        &headers,
        certificate.as_ref(),
        query.as_deref(),
        &job,
    )
    .await
    {
        return r;
    }
    let found = match state.exports.lock().get(&job) {
        Some(Job {
            state: State_::Done { files, .. },
            started_ms,
            ..
        }) => files.get(&resource_type).cloned().map(|f| (f, *started_ms)),
        _ => None,
    };
    let body = match found {
        Some((by_person, started_ms)) => {
            let erased = match crate::store::erasure::erased_since(state.access.db(), started_ms)
                .await
            {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "store failed");
                    return outcome(StatusCode::SERVICE_UNAVAILABLE, "transient", "unavailable");
                }
            };
            Some(
                by_person
                    .into_iter()
                    .filter(|(person, _)| !erased.contains(person))
                    .map(|(_, lines)| lines)
                    .collect::<String>(),
            )
        }
        None => None,
    };
    match body {
        Some(b) => {
            let mut r = (StatusCode::OK, b).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/fhir+ndjson"),
            );
            r
        }
        None => outcome(StatusCode::NOT_FOUND, "not-found", "no such file"),
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn transaction_times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_219_200_000), "2026-11-21T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
    }
}
