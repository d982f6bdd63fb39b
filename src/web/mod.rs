//! The web layer: the thin client's pages (embedded in the binary), the JSON API under `/api/`
//! that the page and the CLI share, server-sent events, `/metrics` for Prometheus, and the
//! theme (the adaptable graphic chart).
//!
//! Access: reading is open to loopback peers; from elsewhere, and for every control action, a
//! bearer token is needed (`Authorization: Bearer …`, never in a URL, never logged). Tokens
//! live in a file (`name:token` per line, or one bare token) or in `POM_TOKEN`. Control
//! requests must be JSON and same-origin: a browser on another site can neither send a JSON
//! body without a preflight nor read the token, so the API is CSRF-safe without cookies.
//!
//! It runs on its own small tokio runtime; every ledger read happens on the blocking pool with a
//! read-only connection, so the daemon's threads never wait for a page.

pub mod listen;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rust_embed::RustEmbed;
use serde::Deserialize;
use serde_json::json;

use crate::board::Board;
use crate::clock::Clock;
use crate::config::rules::RuleSet;
use crate::config::{Shared, current};
use crate::control::{Action, Answer, Control, Refusal};
use crate::ledger::runs::RunState;
use crate::ledger::{FileFilter, Ledger, State as FileState};
use crate::spool::Spool;
use crate::web::listen::Peer;

#[derive(RustEmbed)]
#[folder = "web/"]
struct Assets;

/// Operators' tokens.
#[derive(Clone, Default)]
pub struct Tokens(Vec<(String, String)>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_list()
            .entries(self.0.iter().map(|(who, _)| who))
            .finish()
    }
}

impl Tokens {
    /// From the text of a token file: `name:token` per line, or one bare token (the operator
    /// is then called `operator`). Blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Tokens {
        Tokens(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| match l.split_once(':') {
                    Some((who, t)) => (who.trim().to_string(), t.trim().to_string()),
                    None => ("operator".to_string(), l.to_string()),
                })
                .filter(|(who, t)| {
                    let long_enough = t.len() >= 16;
                    if !long_enough {
                        tracing::warn!(operator = %who,
                            "a token shorter than 16 characters is ignored: control refuses it");
                    }
                    long_enough
                })
                .collect(),
        )
    }

    /// From a file, then `POM_TOKEN`-style text (both may give tokens).
    pub fn load(file: Option<&Path>, env: Option<&str>) -> std::io::Result<Tokens> {
        let mut t = Tokens::default();
        if let Some(f) = file {
            t.0.extend(Tokens::parse(&std::fs::read_to_string(f)?).0);
        }
        if let Some(e) = env {
            t.0.extend(Tokens::parse(e).0);
        }
        Ok(t)
    }

    /// Whether any token is configured (control is possible).
    pub fn any(&self) -> bool {
        !self.0.is_empty()
    }

    /// The operator a token belongs to.
    pub fn who(&self, presented: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(_, t)| constant_time_eq(t.as_bytes(), presented.as_bytes()))
            .map(|(who, _)| who.clone())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How the web layer runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Operators' tokens.
    pub tokens: Tokens,
    /// Theme file (TOML: title, logo, colours, fonts), read at each request.
    pub theme: Option<PathBuf>,
    /// Ledger file.
    pub db: PathBuf,
    /// Rules folder (for the rules page).
    pub rules_dir: PathBuf,
    /// The staged edit's folder (for the rule edit page).
    pub staged_rules: PathBuf,
    /// Where "now" comes from.
    pub clock: Clock,
}

struct App {
    board: Arc<Board>,
    control: Control,
    rules: Shared<RuleSet>,
    spool: Spool,
    settings: Settings,
    readers: Mutex<Vec<Ledger>>,
    failed_sign_ins: Mutex<SignInFailures>,
    /// Event-stream tickets: one-use, short-lived stand-ins for a token in the one request a
    /// browser cannot give a header (`EventSource`).
    tickets: Mutex<std::collections::HashMap<String, (String, Instant)>>,
}

/// How long an event-stream ticket stays good.
const TICKET_LIFE: Duration = Duration::from_secs(30);

/// A ticket: 128 random bits from the kernel, in hex.
fn new_ticket() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

/// Failed sign-ins: logged, and beyond [`SIGN_IN_FAILURES_PER_S`] a second, refused with 429
/// before any token is compared. A valid token is never refused for them.
#[derive(Debug)]
struct SignInFailures {
    second: Instant,
    count: u32,
    total: u64,
}

/// Failed sign-ins answered per second, across every client; past it, 429.
const SIGN_IN_FAILURES_PER_S: u32 = 5;

impl App {
    /// The operator behind the request's token. A missing token is 401; a wrong one is logged
    /// (never the token itself) and 401, or 429 when they come faster than a person types.
    fn operator(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<String, ApiError> {
        let Some(presented) = bearer(headers) else {
            return Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "a valid token is needed: Authorization: Bearer <token>".into(),
            ));
        };
        if let Some(who) = self.settings.tokens.who(presented) {
            return Ok(who);
        }
        let Ok(mut f) = self.failed_sign_ins.lock() else {
            return Err(ApiError(StatusCode::UNAUTHORIZED, "invalid token".into()));
        };
        let now = Instant::now();
        if now.duration_since(f.second) >= Duration::from_secs(1) {
            f.second = now;
            f.count = 0;
        }
        f.count += 1;
        f.total += 1;
        if f.count <= SIGN_IN_FAILURES_PER_S {
            tracing::warn!(peer = ?peer, failures = f.total, "failed sign-in: an invalid token was presented");
            Err(ApiError(
                StatusCode::UNAUTHORIZED,
                "the token presented is not valid".into(),
            ))
        } else {
            Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-ins: wait a second".into(),
            ))
        }
    }
}

type Shared2 = Arc<App>;

/// Why the web layer cannot start.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The runtime cannot start.
    #[error("cannot start the web runtime: {0}")]
    Runtime(std::io::Error),
}

/// The running web layer.
pub struct Web {
    runtime: tokio::runtime::Runtime,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
    addr: SocketAddr,
}

impl Web {
    /// Binds and serves.
    pub fn start(
        settings: Settings,
        board: Arc<Board>,
        control: Control,
        rules: Shared<RuleSet>,
        spool: Spool,
    ) -> Result<Web, WebError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("web")
            .enable_all()
            .build()
            .map_err(WebError::Runtime)?;
        let listen = settings.listen;
        // A deep accept queue: a burst of connections waits there for the accept loop instead
        // of being dropped and retried a second later by the client's kernel.
        let listener = {
            let _in_runtime = runtime.enter();
            let socket = if listen.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            socket
                .and_then(|s| {
                    s.set_reuseaddr(true)?;
                    s.bind(listen)?;
                    s.listen(4096)
                })
                .map_err(|source| WebError::Listen {
                    addr: listen,
                    source,
                })?
        };
        let addr = listener.local_addr().unwrap_or(listen);
        let listener = {
            let _in_runtime = runtime.enter();
            crate::web::listen::Guarded::new(listener, crate::web::listen::Limits::default())
        };
        let (shutdown, mut stopped) = tokio::sync::watch::channel(false);
        let app = Arc::new(App {
            board,
            control,
            rules,
            spool,
            settings,
            readers: Mutex::new(Vec::new()),
            failed_sign_ins: Mutex::new(SignInFailures {
                second: Instant::now(),
                count: 0,
                total: 0,
            }),
            tickets: Mutex::new(std::collections::HashMap::new()),
        });
        let router = router(app, shutdown.subscribe());
        let server = runtime.spawn(async move {
            let served = axum::serve(
                listener,
                router.into_make_service_with_connect_info::<Peer>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "web server");
            }
        });
        tracing::info!(%addr, "web client and API");
        Ok(Web {
            runtime,
            shutdown,
            server,
            addr,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving (live streams end at once; requests in flight get a moment).
    pub fn stop(self) {
        let _ = self.shutdown.send(true);
        let server = self.server;
        let _ = self
            .runtime
            .block_on(async { tokio::time::timeout(Duration::from_secs(3), server).await });
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

fn router(app: Shared2, stopped: tokio::sync::watch::Receiver<bool>) -> Router {
    // Everything that shows the chain: open to loopback, a token from elsewhere.
    let reads = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/overview", get(overview))
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/timeline", get(timeline))
        .route("/api/files", get(files))
        .route("/api/files/{id}", get(file))
        .route("/api/series", get(series))
        .route("/api/stations", get(stations))
        .route("/api/rules", get(rules))
        .route("/api/edit", get(edit))
        .route("/api/audit", get(audit))
        .route("/api/alerts", get(alerts))
        .route("/api/products", get(products))
        .route("/api/products/{name}", get(product))
        .route("/api/replays", get(replays))
        .route("/api/replays/{id}", get(replay_report))
        .route("/reports/replay/{file}", get(replay_page))
        .route("/api/events", get(move |s| events(s, stopped.clone())))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&app),
            read_access,
        ));
    // The page's assets, the theme and the health check say nothing of the chain; actions
    // check their token themselves.
    Router::new()
        .merge(reads)
        // The page is a shell with no data of the chain: from another host it loads, then reads
        // with the token its user signs in with.
        .route("/", get(index))
        .route("/api/events/ticket", post(event_ticket))
        .route("/assets/{file}", get(asset))
        .route("/theme.css", get(theme_css))
        .route("/theme/logo", get(theme_logo))
        .route("/api/health", get(health))
        .route("/api/theme", get(theme_json))
        .route("/api/whoami", get(whoami))
        .route("/api/actions", post(act))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(json_errors))
        .with_state(app)
}

/// Every error is JSON, also those axum answers itself (a query that does not parse, a body
/// over the limit, a wrong method): `{"error": …}` with the same status.
async fn json_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let text = axum::body::to_bytes(response.into_body(), 16 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let reason = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError(status, reason).into_response()
}

/// Reading is open on loopback; from elsewhere a token is needed.
async fn read_access(
    State(app): State<Shared2>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // The event stream from a browser elsewhere: a one-use ticket the page got with its token.
    if request.uri().path() == "/api/events"
        && let Some(ticket) = request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ticket=")))
    {
        let now = Instant::now();
        let valid = app.tickets.lock().ok().and_then(|mut t| {
            t.retain(|_, (_, until)| *until > now);
            t.remove(ticket)
        });
        return match valid {
            Some(_) => next.run(request).await,
            None => ApiError(
                StatusCode::UNAUTHORIZED,
                "the event-stream ticket is unknown, used or expired: ask for another".into(),
            )
            .into_response(),
        };
    }
    if peer.ip().is_loopback() && bearer(request.headers()).is_none() {
        // Open to loopback, but only under a loopback name: a page of another site whose name
        // was rebound to 127.0.0.1 (DNS rebinding) sends its own name as Host, and is refused.
        if loopback_host(request.headers()) {
            return next.run(request).await;
        }
        return ApiError(
            StatusCode::FORBIDDEN,
            "reading without a token is open to loopback names only (Host: localhost, 127.0.0.1, [::1])"
                .into(),
        )
        .into_response();
    }
    match app.operator(request.headers(), Some(peer)) {
        Ok(_) => next.run(request).await,
        Err(ApiError(StatusCode::UNAUTHORIZED, _)) => ApiError(
            StatusCode::UNAUTHORIZED,
            "reading from another host needs a token".into(),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Whether the request's `Host` names the loopback: `localhost`, `127.x.x.x` or `[::1]`, with
/// any port. A request without `Host` (HTTP/1.0 tools) is taken as local.
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// An API error: a status and a reason, as JSON.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

type ApiResult = Result<Response, ApiError>;

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such page".into())
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110): `bearer` is as good as `Bearer`.
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then_some(token)
        })
        .map(str::trim)
}

impl App {
    /// Runs a ledger read on the blocking pool with a pooled read-only connection.
    async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&App, &Ledger) -> Result<T, ApiError> + Send + 'static,
    {
        let app = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let reader = app
                .readers
                .lock()
                .ok()
                .and_then(|mut p| p.pop())
                .map_or_else(|| Ledger::open_readonly(&app.settings.db), Ok)
                .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
            let out = f(&app, &reader);
            if let Ok(mut p) = app.readers.lock() {
                p.push(reader);
            }
            out
        })
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn json_response<T: serde::Serialize>(v: &T) -> Response {
    let mut r = Json(v).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn embedded(path: &str) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let mime = match path.rsplit('.').next() {
                Some("html") => "text/html; charset=utf-8",
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                Some("svg") => "image/svg+xml",
                Some("png") => "image/png",
                _ => "application/octet-stream",
            };
            (
                [
                    (header::CONTENT_TYPE, mime),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                    (
                        header::CONTENT_SECURITY_POLICY,
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
                    ),
                ],
                f.data.into_owned(),
            )
                .into_response()
        }
        None => ApiError(StatusCode::NOT_FOUND, format!("no asset `{path}`")).into_response(),
    }
}

async fn index() -> Response {
    embedded("index.html")
}

async fn asset(UrlPath(file): UrlPath<String>) -> Response {
    embedded(&file)
}

/// Every stage's state; 503 when one is stuck or dead (a degraded stage, retrying a transient
/// fault, is still working: 200, and said).
async fn health(State(app): State<Shared2>) -> Response {
    let stages = app.board.health().report(std::time::Instant::now());
    let failing = stages
        .iter()
        .any(|s| s.state == "stuck" || s.state == "dead");
    let degraded = stages.iter().any(|s| s.state == "degraded");
    let status = if failing {
        "failing"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let mut r = json_response(&json!({ "status": status, "stages": stages }));
    if failing {
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    r
}

/// The theme file: the adaptable graphic chart.
#[derive(Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Theme {
    #[serde(default)]
    title: Option<String>,
    /// Path of the logo (SVG or PNG), relative to the theme file.
    #[serde(default)]
    logo: Option<String>,
    /// CSS colours by name: `primary`, `background`, `surface`, `text`, `muted`, `ok`,
    /// `warning`, `danger`.
    #[serde(default)]
    colors: std::collections::BTreeMap<String, String>,
    /// CSS font families: `body`, `mono`.
    #[serde(default)]
    fonts: std::collections::BTreeMap<String, String>,
}

impl App {
    fn theme(&self) -> Theme {
        let Some(path) = &self.settings.theme else {
            return Theme::default();
        };
        match std::fs::read_to_string(path).map(|t| toml::from_str::<Theme>(&t)) {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(file = %path.display(), error = %e, "theme file: default theme used");
                Theme::default()
            }
            Err(_) => Theme::default(),
        }
    }
}

/// A CSS value from the theme: anything that could end the declaration is refused.
fn css_value(v: &str) -> Option<&str> {
    (!v.contains([';', '{', '}', '<', '>', '\\', '\n'])).then_some(v)
}

async fn theme_css(State(app): State<Shared2>) -> Response {
    let t = app.theme();
    let mut css = String::from(":root {\n");
    for (k, v) in &t.colors {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && let Some(v) = css_value(v)
        {
            css.push_str(&format!("  --pom-{k}: {v};\n"));
        }
    }
    for (k, v) in &t.fonts {
        if k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && let Some(v) = css_value(v)
        {
            css.push_str(&format!("  --pom-font-{k}: {v};\n"));
        }
    }
    css.push_str("}\n");
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        css,
    )
        .into_response()
}

/// Largest logo served, in bytes.
const MAX_LOGO: u64 = 1024 * 1024;

async fn theme_logo(State(app): State<Shared2>) -> Response {
    let t = app.theme();
    if let (Some(logo), Some(theme)) = (&t.logo, &app.settings.theme) {
        // Served to anyone who may read the page: confined to the theme's folder, a plain
        // relative path, never through a link, and small.
        let dir = theme.parent().unwrap_or(Path::new("."));
        match crate::fs::read_confined(dir, Path::new(logo), MAX_LOGO) {
            Err(e) => {
                tracing::warn!(logo = ?logo, error = %e, "theme: logo refused, the default is shown");
            }
            Ok(bytes) => {
                let mime = if logo.ends_with(".svg") {
                    "image/svg+xml"
                } else {
                    "image/png"
                };
                return (
                    [
                        (header::CONTENT_TYPE, mime),
                        (header::CACHE_CONTROL, "no-store"),
                    ],
                    bytes,
                )
                    .into_response();
            }
        }
    }
    embedded("logo.svg")
}

async fn theme_json(State(app): State<Shared2>) -> Response {
    let t = app.theme();
    json_response(&json!({
        "title": t.title.unwrap_or_else(|| "POM".into()),
        "logo": "/theme/logo",
        "control": app.settings.tokens.any(),
    }))
}

async fn whoami(
    State(app): State<Shared2>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> ApiResult {
    let who = app.operator(&headers, Some(peer))?;
    Ok(json_response(&json!({ "who": who })))
}

async fn overview(State(app): State<Shared2>) -> ApiResult {
    let v = app
        .read(|app, r| {
            crate::supervise::view::overview(
                r,
                &current(&app.rules),
                &app.board,
                app.settings.clock.now(),
            )
            .map_err(internal)
        })
        .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct RunsQuery {
    model: Option<String>,
    state: Option<String>,
    mode: Option<String>,
    limit: Option<usize>,
}

/// The traffic a list shows: `mode=operational` (the default), `replay` or `all`.
fn traffic(mode: Option<&str>) -> Result<crate::ledger::Traffic, ApiError> {
    match mode.filter(|m| !m.is_empty()) {
        Some(m) => m
            .parse()
            .map_err(|e: String| ApiError(StatusCode::BAD_REQUEST, e)),
        None => Ok(crate::ledger::Traffic::Operational),
    }
}

async fn runs(State(app): State<Shared2>, Query(q): Query<RunsQuery>) -> ApiResult {
    let state = match q.state.as_deref().filter(|s| !s.is_empty()) {
        Some(s) => Some(RunState::parse(s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("state `{s}` is not one of queued, running, succeeded, failed, timed_out, cancelled, interrupted"),
            )
        })?),
        None => None,
    };
    let limit = q.limit.unwrap_or(100).min(1000);
    let model = q.model.filter(|m| !m.is_empty());
    let traffic = traffic(q.mode.as_deref())?;
    let v = app
        .read(move |_, r| {
            r.runs_in(model.as_deref(), state, traffic, limit)
                .map_err(internal)
        })
        .await?;
    Ok(json_response(&v))
}

async fn run(State(app): State<Shared2>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let v = app
        .read(move |app, r| {
            crate::supervise::view::run_detail(r, app.spool.root(), &id)
                .map_err(internal)?
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run `{id}`")))
        })
        .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct TimelineQuery {
    hours: Option<i64>,
}

async fn timeline(State(app): State<Shared2>, Query(q): Query<TimelineQuery>) -> ApiResult {
    let hours = q.hours.unwrap_or(24).clamp(1, 24 * 7);
    let v = app
        .read(move |app, r| {
            let now = app.settings.clock.now();
            let models = crate::supervise::view::timeline(r, now, hours).map_err(internal)?;
            Ok(json!({
                "from": crate::ledger::timestamp(now - chrono::Duration::hours(hours)),
                "to": crate::ledger::timestamp(now),
                "models": models,
            }))
        })
        .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct FilesQuery {
    name: Option<String>,
    channel: Option<String>,
    format: Option<String>,
    state: Option<String>,
    route: Option<String>,
    before: Option<String>,
    mode: Option<String>,
    limit: Option<usize>,
}

async fn files(State(app): State<Shared2>, Query(q): Query<FilesQuery>) -> ApiResult {
    let some = |v: Option<String>| v.filter(|s| !s.is_empty());
    let state = match some(q.state) {
        Some(s) => Some(FileState::parse(&s).ok_or_else(|| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("state `{s}` is not one of claimed, archived, rejected, duplicate"),
            )
        })?),
        None => None,
    };
    let filter = FileFilter {
        traffic: traffic(q.mode.as_deref())?,
        state,
        channel: some(q.channel),
        route: some(q.route),
        name: some(q.name),
        format: some(q.format),
        before: some(q.before),
        limit: q.limit.unwrap_or(100).min(1000),
    };
    let v = app
        .read(move |_, r| crate::supervise::view::files(r, &filter).map_err(internal))
        .await?;
    Ok(json_response(&v))
}

async fn file(State(app): State<Shared2>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let v = app
        .read(move |app, r| {
            let mut d = crate::supervise::view::file_detail(r, &id)
                .map_err(internal)?
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no file `{id}`")))?;
            d.nearest = crate::supervise::view::explain_unrouted(
                app.spool.root(),
                &current(&app.rules),
                &d.file,
            );
            Ok(d)
        })
        .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct SeriesQuery {
    run: Option<String>,
    file: Option<String>,
    station: Option<String>,
    days: Option<u32>,
    points: Option<usize>,
}

/// Series to plot: a run's inputs and outputs with its time0 (`run=`), an archived file
/// (`file=`), or a station's latest forecasts with its observations of the `days` (default 3, at
/// most 30) before them (`station=`), each series thinned to `points` (default 2,000, at most
/// 20,000).
async fn series(State(app): State<Shared2>, Query(q): Query<SeriesQuery>) -> ApiResult {
    use crate::supervise::series;
    let most = q.points.unwrap_or(2_000).clamp(4, 20_000);
    let v = app
        .read(move |app, r| match (q.run, q.file, q.station) {
            (None, None, Some(station)) => {
                let days = q
                    .days
                    .unwrap_or(3)
                    .clamp(1, crate::supervise::stations::BACKFILL_DAYS as u32);
                crate::supervise::stations::hydrograph(r, app.spool.root(), &station, days, most)
                    .map_err(internal)?
                    .ok_or_else(|| {
                        ApiError(StatusCode::NOT_FOUND, format!("no station `{station}`"))
                    })
            }
            (Some(run), None, None) => series::of_run(r, app.spool.root(), &run, most)
                .map_err(internal)?
                .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no run `{run}`"))),
            (None, Some(file), None) => {
                if r.get(&file).map_err(internal)?.is_none() {
                    return Err(ApiError(StatusCode::NOT_FOUND, format!("no file `{file}`")));
                }
                Ok(series::Hydrograph {
                    time0: None,
                    series: series::of_files(r, app.spool.root(), &[("file", file)], most)
                        .map_err(internal)?,
                })
            }
            _ => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "give one of run=RUN, file=FILE or station=LOCATION".into(),
            )),
        })
        .await?;
    Ok(json_response(&v))
}

/// The stations: every location of the archived operational PI time series, with its
/// parameters, its last observation and its latest forecast.
async fn stations(State(app): State<Shared2>) -> ApiResult {
    let v = app.read(|_, r| r.stations(5_000).map_err(internal)).await?;
    Ok(json_response(&v))
}

async fn rules(State(app): State<Shared2>) -> ApiResult {
    let v =
        crate::supervise::view::rules(&current(&app.rules), &app.board, &app.settings.rules_dir);
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct EditQuery {
    days: Option<u32>,
}

/// The rule edit not in force: the refused one, and the staged one with its impact.
async fn edit(State(app): State<Shared2>, Query(q): Query<EditQuery>) -> ApiResult {
    let days = q.days.unwrap_or(7).clamp(1, 90);
    let v = app
        .read(move |app, r| {
            crate::supervise::impact::edit_view(
                r,
                app.spool.root(),
                &current(&app.rules),
                app.board.refused(),
                &app.settings.staged_rules,
                app.settings.clock.now(),
                days,
            )
            .map_err(internal)
        })
        .await?;
    Ok(json_response(&v))
}

#[derive(Deserialize)]
struct LimitQuery {
    limit: Option<usize>,
}

async fn audit(State(app): State<Shared2>, Query(q): Query<LimitQuery>) -> ApiResult {
    let limit = q.limit.unwrap_or(100).min(1000);
    let v = app
        .read(move |_, r| r.audit_log(limit).map_err(internal))
        .await?;
    Ok(json_response(&v))
}

async fn replays(State(app): State<Shared2>) -> ApiResult {
    let v = app.read(|_, r| r.sessions().map_err(internal)).await?;
    Ok(json_response(&v))
}

/// A session with its comparison report, once it is done.
async fn replay_report(State(app): State<Shared2>, UrlPath(id): UrlPath<String>) -> ApiResult {
    let v = app
        .read(move |app, r| {
            let s = r.session(&id).map_err(internal)?.ok_or_else(|| {
                ApiError(StatusCode::NOT_FOUND, format!("no replay session `{id}`"))
            })?;
            let report = s
                .report
                .as_ref()
                .and_then(|p| std::fs::read(app.spool.root().join(p)).ok())
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
            Ok(json!({ "session": s, "report": report }))
        })
        .await?;
    Ok(json_response(&v))
}

/// The page a person reads: `reports/replay/<session>.html`.
async fn replay_page(State(app): State<Shared2>, UrlPath(file): UrlPath<String>) -> ApiResult {
    let ok = file.ends_with(".html")
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !file.starts_with('.');
    if !ok {
        return Err(ApiError(StatusCode::NOT_FOUND, "no such report".into()));
    }
    let path = app.spool.root().join("reports/replay").join(&file);
    let body = std::fs::read(&path)
        .map_err(|_| ApiError(StatusCode::NOT_FOUND, format!("no report `{file}`")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'",
            ),
        ],
        body,
    )
        .into_response())
}

async fn alerts(State(app): State<Shared2>) -> ApiResult {
    Ok(json_response(&app.board.alerts()))
}

async fn products(State(app): State<Shared2>) -> ApiResult {
    Ok(json_response(&app.board.products()))
}

async fn product(State(app): State<Shared2>, UrlPath(name): UrlPath<String>) -> ApiResult {
    match app.board.products().into_iter().find(|p| p.name == name) {
        Some(p) => Ok(json_response(&p)),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no product `{name}`"),
        )),
    }
}

/// A one-use ticket for the event stream, good for 30 s, for the holder of a token: a browser's
/// `EventSource` cannot send a header, and the token itself never goes into a URL.
async fn event_ticket(
    State(app): State<Shared2>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
) -> ApiResult {
    let who = app.operator(&headers, Some(peer))?;
    let ticket = new_ticket().map_err(internal)?;
    let now = Instant::now();
    let mut tickets = app
        .tickets
        .lock()
        .map_err(|_| internal("the ticket table is poisoned"))?;
    tickets.retain(|_, (_, until)| *until > now);
    // Bounded: a flood of requests cannot grow it past what 30 s of real use needs.
    if tickets.len() >= 1024 {
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            "too many event-stream tickets outstanding: wait a moment".into(),
        ));
    }
    tickets.insert(ticket.clone(), (who, now + TICKET_LIFE));
    Ok(json_response(&json!({
        "ticket": ticket,
        "expires_in_s": TICKET_LIFE.as_secs(),
    })))
}

async fn events(
    State(app): State<Shared2>,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> Response {
    let rx = app.board.subscribe();
    // A first event at once: the client knows it is subscribed.
    let hello = futures_util::stream::once(async {
        Ok::<_, Infallible>(SseEvent::default().event("hello").data("{}"))
    });
    let stream = futures_util::stream::unfold((rx, stopped), |(mut rx, mut stopped)| async move {
        use tokio::sync::broadcast::error::RecvError;
        let got = tokio::select! {
            _ = stopped.wait_for(|s| *s) => None,
            got = rx.recv() => Some(got),
        };
        let ev = match got? {
            Ok(e) => {
                let data = serde_json::to_string(&e).unwrap_or_default();
                SseEvent::default().event(e.kind).data(data)
            }
            Err(RecvError::Lagged(_)) => SseEvent::default().event("lagged").data("{}"),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok::<_, Infallible>(ev), (rx, stopped)))
    });
    use futures_util::StreamExt;
    Sse::new(hello.chain(stream))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// Control: a token, a JSON body, and no foreign origin.
async fn act(
    State(app): State<Shared2>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    if !app.settings.tokens.any() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "control is disabled: no token is configured (--token-file or POM_TOKEN)".into(),
        ));
    }
    let who = app.operator(&headers, Some(peer))?;
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "control requests are JSON (Content-Type: application/json)".into(),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let origin_host = origin.split_once("://").map_or(origin, |x| x.1);
        if origin_host != host {
            return Err(ApiError(
                StatusCode::FORBIDDEN,
                format!("a control request from another origin ({origin}) is refused"),
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "a cross-site control request is refused".into(),
        ));
    }
    let action: Action = serde_json::from_slice(&body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("not an action: {e}")))?;
    let control = app.control.clone();
    let answer = tokio::task::spawn_blocking(move || control.act(&who, action))
        .await
        .map_err(internal)?;
    let status = match &answer {
        Answer::Done { .. } => StatusCode::OK,
        Answer::Refused { refusal, .. } => match refusal {
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::Conflict => StatusCode::CONFLICT,
            Refusal::Invalid => StatusCode::BAD_REQUEST,
            Refusal::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        },
    };
    Ok((status, Json(answer)).into_response())
}

async fn metrics(State(app): State<Shared2>) -> ApiResult {
    let text = app
        .read(|app, r| {
            crate::supervise::metrics::render(
                r,
                &current(&app.rules),
                &app.board,
                app.settings.clock.now(),
                crate::chain::executor::slurm::CALLS.load(std::sync::atomic::Ordering::Relaxed),
            )
            .map_err(internal)
        })
        .await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
