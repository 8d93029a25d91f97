//! A local stand-in for the BigQuery REST API, just what `google-cloud-bigquery` calls for a
//! small query: `jobs.query`, `jobs.insert`, `jobs.get` and `jobs.getQueryResults`. It
//! accepts only tokens the Google stand-in issued, answers in BigQuery's wire format
//! (errors included), and records who called with which token and billing project.

use super::GoogleStandIn;
use crate::secret::fingerprint;
use actix_web::dev::ServerHandle;
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

/// Jobs kept for `jobs.get` and `jobs.getQueryResults`; older ones are forgotten.
const MAX_JOBS: usize = 1000;
/// Calls kept for the tests to read; older ones are forgotten.
const MAX_CALLS: usize = 1000;
/// Longest query text accepted.
const MAX_QUERY_BYTES: usize = 16 * 1024;

/// One request the stand-in received.
#[derive(Debug, Clone)]
pub struct BigQueryCall {
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// SHA-256 fingerprint of the bearer token (never the token itself).
    pub token_sha256: Option<String>,
    /// Who the Google stand-in issued the token for; `None` when it did not issue it.
    pub subject: Option<String>,
    /// The `x-goog-user-project` header: the project billed and charged quota.
    pub user_project: Option<String>,
}

/// A finished query: its project, text and the person it ran as.
#[derive(Debug, Clone)]
struct Job {
    project: String,
    query: String,
    session_user: String,
    /// Milliseconds since the epoch, as BigQuery writes job times.
    created_ms: i128,
}

struct State {
    google: GoogleStandIn,
    calls: Mutex<Vec<BigQueryCall>>,
    jobs: Mutex<HashMap<String, Job>>,
}

/// A running BigQuery stand-in.
#[derive(Clone)]
pub struct BigQueryStandIn {
    state: Arc<State>,
    handle: ServerHandle,
    addr: SocketAddr,
}

impl BigQueryStandIn {
    /// Starts the stand-in on `listener` (loopback only), accepting the tokens `google`
    /// issued.
    pub fn start(listener: TcpListener, google: GoogleStandIn) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            google,
            calls: Mutex::new(Vec::new()),
            jobs: Mutex::new(HashMap::new()),
        });
        let handle = super::serve(listener, state.clone(), |app| {
            app.route(
                "/bigquery/v2/projects/{project}/queries",
                web::post().to(jobs_query),
            )
            .route(
                "/bigquery/v2/projects/{project}/queries/{job}",
                web::get().to(get_query_results),
            )
            .route(
                "/bigquery/v2/projects/{project}/jobs",
                web::post().to(jobs_insert),
            )
            .route(
                "/bigquery/v2/projects/{project}/jobs/{job}",
                web::get().to(jobs_get),
            )
            .default_service(web::to(not_found));
        })?;
        Ok(Self {
            state,
            handle,
            addr,
        })
    }

    /// The `api_endpoint` a client is pointed at.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request received so far (the newest [`MAX_CALLS`]).
    pub fn calls(&self) -> Vec<BigQueryCall> {
        self.state.calls.lock().expect("lock").clone()
    }

    /// Stops the server.
    pub async fn stop(&self) {
        self.handle.stop(true).await;
    }
}

/// A refusal, answered in BigQuery's error shape.
#[derive(Debug)]
struct BqError {
    code: u16,
    reason: &'static str,
    message: String,
}

fn bigquery_error(code: u16, reason: &'static str, message: &str) -> BqError {
    BqError {
        code,
        reason,
        message: message.to_owned(),
    }
}

impl BqError {
    /// Google's JSON error with BigQuery's legacy `errors` list.
    fn response(&self) -> HttpResponse {
        let status = match self.code {
            400 => "INVALID_ARGUMENT",
            401 => "UNAUTHENTICATED",
            404 => "NOT_FOUND",
            _ => "INTERNAL",
        };
        let mut response = HttpResponse::build(
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        );
        if self.code == 401 {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                r#"Bearer realm="https://accounts.google.com/", error="invalid_token""#,
            ));
        }
        response.json(json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "errors": [{ "message": self.message, "domain": "global", "reason": self.reason }],
                "status": status,
            }
        }))
    }
}

/// Records the call; the person its bearer token was issued for, or the 401 BigQuery
/// answers a missing, unknown or expired token with.
fn authenticate(req: &HttpRequest, state: &State) -> Result<String, BqError> {
    let header_value = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let token = header_value(header::AUTHORIZATION)
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    let subject = token
        .as_deref()
        .and_then(|t| state.google.issued(t))
        .map(|issued| issued.subject);
    let mut calls = state.calls.lock().expect("lock");
    if calls.len() >= MAX_CALLS {
        calls.remove(0);
    }
    calls.push(BigQueryCall {
        method: req.method().to_string(),
        path: req.path().to_owned(),
        token_sha256: token.as_deref().map(|t| fingerprint(t.as_bytes())),
        subject: subject.clone(),
        user_project: header_value(header::HeaderName::from_static("x-goog-user-project")),
    });
    subject.ok_or_else(|| {
        bigquery_error(
            401,
            "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        )
    })
}

/// The one-row result of the queries the stand-in knows, or BigQuery's refusal.
fn run(query: &str, session_user: &str) -> Result<(Value, Value), BqError> {
    let normalized = query
        .trim()
        .trim_end_matches(';')
        .to_ascii_uppercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let (kind, value) = match normalized.as_str() {
        "SELECT 1" => ("INTEGER", "1".to_owned()),
        "SELECT SESSION_USER()" => ("STRING", session_user.to_owned()),
        _ => {
            return Err(bigquery_error(
                400,
                "invalidQuery",
                "the BigQuery stand-in answers only SELECT 1 and SELECT SESSION_USER()",
            ))
        }
    };
    let schema = json!({ "fields": [{ "name": "f0_", "type": kind, "mode": "NULLABLE" }] });
    let rows = json!([{ "f": [{ "v": value }] }]);
    Ok((schema, rows))
}

fn job_reference(project: &str, job_id: &str) -> Value {
    json!({ "projectId": project, "jobId": job_id, "location": "US" })
}

/// Runs `query` for `session_user` and keeps the finished job under a new id.
fn start_job(
    state: &State,
    project: &str,
    query: &str,
    session_user: String,
) -> Result<String, BqError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(bigquery_error(400, "invalid", "the query is too long"));
    }
    run(query, &session_user)?;
    let job_id = format!("job_{}", uuid::Uuid::new_v4().simple());
    let mut jobs = state.jobs.lock().expect("lock");
    if jobs.len() >= MAX_JOBS {
        jobs.clear();
    }
    jobs.insert(
        job_id.clone(),
        Job {
            project: project.to_owned(),
            query: query.to_owned(),
            session_user,
            created_ms: time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000,
        },
    );
    Ok(job_id)
}

/// A finished job's results, as `jobs.query` and `jobs.getQueryResults` answer.
fn query_response(job_id: &str, job: &Job) -> Result<Value, BqError> {
    let (schema, rows) = run(&job.query, &job.session_user)?;
    Ok(json!({
        "kind": "bigquery#getQueryResultsResponse",
        "schema": schema,
        "jobReference": job_reference(&job.project, job_id),
        "totalRows": "1",
        "rows": rows,
        "totalBytesProcessed": "0",
        "jobComplete": true,
        "cacheHit": false,
    }))
}

/// A finished job's resource, as `jobs.insert` and `jobs.get` answer.
fn job_resource(job_id: &str, job: &Job) -> Value {
    json!({
        "kind": "bigquery#job",
        "id": format!("{}:US.{job_id}", job.project),
        "jobReference": job_reference(&job.project, job_id),
        "configuration": { "jobType": "QUERY", "query": { "query": job.query, "useLegacySql": false } },
        "status": { "state": "DONE" },
        "statistics": {
            "creationTime": job.created_ms.to_string(),
            "startTime": job.created_ms.to_string(),
            "endTime": job.created_ms.to_string(),
            "totalBytesProcessed": "0",
            "query": { "totalBytesProcessed": "0", "cacheHit": false, "statementType": "SELECT" },
        },
        "user_email": job.session_user,
    })
}

fn find_job(state: &State, project: &str, job_id: &str) -> Result<Job, BqError> {
    state
        .jobs
        .lock()
        .expect("lock")
        .get(job_id)
        .filter(|j| j.project == project)
        .cloned()
        .ok_or_else(|| {
            bigquery_error(
                404,
                "notFound",
                &format!("Not found: Job {project}:US.{job_id}"),
            )
        })
}

fn answer(result: Result<Value, BqError>) -> HttpResponse {
    result.map_or_else(|e| e.response(), |body| HttpResponse::Ok().json(body))
}

/// `jobs.query`: `POST …/projects/P/queries` with `{"query": …}`.
async fn jobs_query(
    req: HttpRequest,
    project: web::Path<String>,
    body: web::Json<Value>,
    state: web::Data<State>,
) -> HttpResponse {
    answer((|| {
        let user = authenticate(&req, &state)?;
        let query = body["query"].as_str().unwrap_or_default();
        let job_id = start_job(&state, &project, query, user)?;
        let job = find_job(&state, &project, &job_id)?;
        let mut response = query_response(&job_id, &job)?;
        response["kind"] = "bigquery#queryResponse".into();
        Ok(response)
    })())
}

/// `jobs.insert`: `POST …/projects/P/jobs` with a query job's configuration.
async fn jobs_insert(
    req: HttpRequest,
    project: web::Path<String>,
    body: web::Json<Value>,
    state: web::Data<State>,
) -> HttpResponse {
    answer((|| {
        let user = authenticate(&req, &state)?;
        let query = body["configuration"]["query"]["query"]
            .as_str()
            .unwrap_or_default();
        let job_id = start_job(&state, &project, query, user)?;
        let job = find_job(&state, &project, &job_id)?;
        Ok(job_resource(&job_id, &job))
    })())
}

/// `jobs.get`: `GET …/projects/P/jobs/JOB`.
async fn jobs_get(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> HttpResponse {
    answer((|| {
        authenticate(&req, &state)?;
        let (project, job_id) = path.into_inner();
        let job = find_job(&state, &project, &job_id)?;
        Ok(job_resource(&job_id, &job))
    })())
}

/// `jobs.getQueryResults`: `GET …/projects/P/queries/JOB`.
async fn get_query_results(
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> HttpResponse {
    answer((|| {
        authenticate(&req, &state)?;
        let (project, job_id) = path.into_inner();
        let job = find_job(&state, &project, &job_id)?;
        query_response(&job_id, &job)
    })())
}

async fn not_found(req: HttpRequest) -> HttpResponse {
    let error = bigquery_error(
        404,
        "notFound",
        &format!(
            "the BigQuery stand-in does not serve {} {}",
            req.method(),
            req.path()
        ),
    );
    error.response()
}
