//! The web console (SPEC 8), served by the binary itself: HTML rendered on the server (maud),
//! plots drawn as SVG on the server, one small stylesheet and one small script compiled in.
//! Nothing is fetched from elsewhere, and pages work without the script (it only shows times
//! in the viewer's zone).
//!
//! - `GET /`: the sign-in form, or the tenant's groups once signed in.
//! - `GET /console/groups/{id}?range=1h|24h|7d&before=<version>`: a group's page.
//! - `POST /console/sign-in`, `POST /console/sign-out`.
//! - `POST /console/groups/{id}/confirm`, then `.../act`: an action (pause, resume, set the
//!   desired capacity, execute a policy), confirmed on a page of its own before it is done.
//!
//! A signed-in browser holds only a session cookie (HttpOnly, SameSite=Strict, expiring; see
//! [`session`]). Every answer forbids inline script and anything off-site, and a request that
//! changes something must come from the console's own pages: same origin, and the session's
//! token in the form.

pub mod history;
mod pages;

pub use pages::forget_day_starts;
pub mod plot;
pub mod session;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use flotilla_actors::aggregate::{Groups, Policies};
use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::group::{GroupCommand, GroupEvent, GroupPatch, Outcome, Pause};
use flotilla_actors::domain::{Cause, GroupId, Kind, PolicyId};
use serde::Deserialize;

use crate::api::auth::constant_time_eq;
use crate::api::{resource, AppState};
pub use pages::GroupPage;
use session::{Flash, Session, COOKIE};

/// The console's Content-Security-Policy: its own script and stylesheet only, no inline script
/// or style, no frames, forms posted only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                       connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
                       base-uri 'none'";

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/app.js");

/// The console's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    use crate::api::resource;
    use actix_web::web::{get, post};
    cfg.service(resource("/", "GET").route(get().to(index)))
        .service(resource("/console/sign-in", "POST").route(post().to(sign_in)))
        .service(resource("/console/sign-out", "POST").route(post().to(sign_out)))
        .service(resource("/console/groups/{id}", "GET").route(get().to(group)))
        .service(resource("/console/groups/{id}/confirm", "POST").route(post().to(confirm)))
        .service(resource("/console/groups/{id}/act", "POST").route(post().to(act)))
        .service(resource("/console/assets/style.css", "GET").route(get().to(style)))
        .service(resource("/console/assets/app.js", "GET").route(get().to(script)));
}

/// An answer with the console's security headers.
fn secured(status: StatusCode) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::build(status);
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        // Not `no-referrer`: with it a browser sends `Origin: null` on the console's own
        // forms, which the same-origin check then refuses. Nothing leaves for other sites.
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"));
    builder
}

fn html(status: StatusCode, markup: maud::Markup) -> HttpResponse {
    secured(status)
        .content_type("text/html; charset=utf-8")
        .body(markup.into_string())
}

fn see_other(to: &str) -> HttpResponse {
    secured(StatusCode::SEE_OTHER)
        .insert_header((header::LOCATION, to))
        .finish()
}

async fn style() -> HttpResponse {
    secured(StatusCode::OK)
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

async fn script() -> HttpResponse {
    secured(StatusCode::OK)
        .content_type("text/javascript; charset=utf-8")
        .body(SCRIPT)
}

fn now(state: &AppState) -> Timestamp {
    state.supervisor.clock().now()
}

/// The browser's session, if it is signed in and the token it signed in with still names its
/// tenant (a new token for the tenant ends its sessions).
fn signed_in(state: &AppState, req: &HttpRequest) -> Option<(String, Session)> {
    let id = req.cookie(COOKIE)?.value().to_owned();
    let session = state.sessions.get(&id, now(state))?;
    if state.index.tenant_of_token(&session.token_hash).as_ref() != Some(&session.tenant) {
        state.sessions.end(&id);
        return None;
    }
    Some((id, session))
}

/// Whether a request that changes something comes from the console's own pages: a browser
/// says where a request comes from (`Sec-Fetch-Site`, `Origin`), and a cross-site one is
/// refused whatever its cookies (which SameSite=Strict keeps back anyway). The origin is the
/// host the request was sent to, or the service's `--public-url` (behind a proxy that rewrites
/// the host).
fn same_origin(state: &AppState, req: &HttpRequest) -> bool {
    let headers = req.headers();
    if let Some(site) = headers.get("sec-fetch-site") {
        if !matches!(site.to_str(), Ok("same-origin" | "none")) {
            return false;
        }
    }
    match headers.get(header::ORIGIN).map(|o| o.to_str()) {
        None => true,
        Some(Ok(origin)) => {
            // `scheme://host[:port]`, without a path.
            let origin_of = |url: &str| -> Option<(String, String)> {
                let (scheme, rest) = url.split_once("://")?;
                let authority = rest.split('/').next().unwrap_or_default();
                Some((scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
            };
            let Some((_, authority)) = origin_of(origin) else {
                return false;
            };
            // The host the browser sent the form to (a proxy may have ended TLS, so the
            // scheme is not compared), or the service's public URL, scheme and all.
            authority == req.connection_info().host().to_ascii_lowercase()
                || origin_of(origin) == origin_of(&state.settings.public_url())
        }
        Some(Err(_)) => false,
    }
}

fn refused(message: &str) -> HttpResponse {
    html(
        StatusCode::FORBIDDEN,
        pages::message("Refused", message, None),
    )
}

/// A page's query parameter `name`, read leniently: one that is missing, repeated oddly or
/// does not parse is left out (the console answers with a page, never the API's JSON error).
fn param<T: std::str::FromStr>(req: &HttpRequest, name: &str) -> Option<T> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .unwrap_or_default()
        .into_iter()
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.parse().ok())
}

async fn index(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    if !state.is_ready() {
        return html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::message("Starting", "The journal is still being replayed.", None),
        );
    }
    let Some((id, session)) = signed_in(&state, &req) else {
        return html(StatusCode::OK, pages::sign_in(None));
    };
    let cursor = param::<String>(&req, "cursor").map(|c| GroupId::from(c.as_str()));
    let page = state
        .index
        .groups_of(&session.tenant, cursor.as_ref(), pages::GROUPS_PER_PAGE);
    let mut rows = Vec::with_capacity(page.items.len());
    for gid in &page.items {
        let Ok(group) = resource::load::<Groups>(&state, gid).await else {
            continue;
        };
        let last = pages::last_activity(state.supervisor.journal(), gid);
        rows.push((group, last));
    }
    let flash = state.sessions.take_flash(&id);
    html(
        StatusCode::OK,
        pages::groups(&session, &rows, page.next.as_ref(), flash.as_ref()),
    )
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    if !same_origin(&state, &req) {
        return refused("This form must be sent from the console's own page.");
    }
    let token = serde_urlencoded::from_bytes::<SignIn>(&body)
        .map(|form| form.token.trim().to_owned())
        .unwrap_or_default();
    let hash = crate::token::hash(&token);
    let Some(tenant) = state.tenant_of_token(&hash).await else {
        tracing::info!("console sign-in with an unknown token");
        return html(
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(
                "That token is not a tenant's token here. Check it and try again.",
            )),
        );
    };
    let id = state.sessions.start(tenant, hash, now(&state));
    let secure = state.settings.public_url().starts_with("https://");
    let cookie = Cookie::build(COOKIE, id)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .max_age(actix_web::cookie::time::Duration::seconds(
            session::TTL_SECONDS as i64,
        ))
        .finish();
    let mut answer = see_other("/");
    let _ = answer.add_cookie(&cookie);
    answer
}

/// A form that carries the session's token.
#[derive(Deserialize)]
struct Signed {
    csrf: String,
}

async fn sign_out(state: web::Data<AppState>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let Some((id, session)) = signed_in(&state, &req) else {
        return see_other("/");
    };
    let form = serde_urlencoded::from_bytes::<Signed>(&body);
    if !same_origin(&state, &req)
        || !form.is_ok_and(|f| constant_time_eq(f.csrf.as_bytes(), session.csrf.as_bytes()))
    {
        return refused("This form must be sent from the console's own page.");
    }
    state.sessions.end(&id);
    let mut answer = see_other("/");
    let mut gone = Cookie::build(COOKIE, "").path("/").finish();
    gone.make_removal();
    let _ = answer.add_cookie(&gone);
    answer
}

/// The ranges a group's page plots.
pub const RANGES: [(&str, i64); 3] = [
    ("1h", 3_600_000),
    ("24h", 86_400_000),
    ("7d", 7 * 86_400_000),
];

/// The group `id` of the session's tenant, or the same "not found" page for one of another
/// tenant as for one that does not exist.
async fn owned_group(
    state: &AppState,
    session: &Session,
    id: &str,
) -> Result<flotilla_actors::domain::group::Group, Box<HttpResponse>> {
    let not_found = || {
        Box::new(html(
            StatusCode::NOT_FOUND,
            pages::message(
                "Not found",
                "There is no such group.",
                Some(("Back to the groups", "/")),
            ),
        ))
    };
    let gid = resource::owned::<Groups>(state, &session.tenant, id, None)
        .await
        .map_err(|_| not_found())?;
    resource::load::<Groups>(state, &gid)
        .await
        .map_err(|_| not_found())
}

async fn group(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> HttpResponse {
    let Some((sid, session)) = signed_in(&state, &req) else {
        return see_other("/");
    };
    let group = match owned_group(&state, &session, &path).await {
        Ok(group) => group,
        Err(answer) => return *answer,
    };
    // `?range=1h|24h|7d` (24 h otherwise), `?before=<version>` for older activity.
    let asked: Option<String> = param(&req, "range");
    let range = RANGES
        .iter()
        .find(|(name, _)| Some(*name) == asked.as_deref())
        .copied()
        .unwrap_or(RANGES[1]);
    let before: Option<u64> = param(&req, "before");
    let page = match GroupPage::load(&state, group, range, before, now(&state)).await {
        Ok(page) => page,
        Err(error) => {
            tracing::error!(%error, "the console could not read a group's history");
            return html(
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::message(
                    "Unavailable",
                    "The group's history could not be read; try again.",
                    None,
                ),
            );
        }
    };
    let flash = state.sessions.take_flash(&sid);
    html(StatusCode::OK, page.render(&session, flash.as_ref()))
}

/// An action's form, on the group's page and on its confirmation page.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    /// The session's token.
    pub csrf: String,
    /// `pause`, `resume`, `desired` or `execute`.
    pub action: String,
    /// Pause scale-in (a checkbox: present when ticked).
    pub scale_in: Option<String>,
    /// Pause scale-out.
    pub scale_out: Option<String>,
    /// The desired capacity to set.
    pub desired: Option<String>,
    /// The policy to execute.
    pub policy: Option<String>,
}

/// What an action will do, checked before it is confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Pause these directions.
    Pause(Pause),
    /// Resume both directions.
    Resume,
    /// Set the desired capacity.
    Desired(u32),
    /// Execute this policy now.
    Execute(PolicyId),
}

impl Action {
    /// The action a form asks for, or why it cannot be done.
    pub fn of(form: &ActionForm) -> Result<Action, String> {
        match form.action.as_str() {
            "pause" => {
                let pause = Pause {
                    scale_in: form.scale_in.is_some(),
                    scale_out: form.scale_out.is_some(),
                };
                if !pause.scale_in && !pause.scale_out {
                    return Err("Choose scale-in, scale-out or both to pause.".into());
                }
                Ok(Action::Pause(pause))
            }
            "resume" => Ok(Action::Resume),
            "desired" => form
                .desired
                .as_deref()
                .and_then(|d| d.trim().parse::<u32>().ok())
                .map(Action::Desired)
                .ok_or_else(|| "The desired capacity must be a whole number.".into()),
            "execute" => form
                .policy
                .as_deref()
                .filter(|p| Kind::of(p) == Some(Kind::Policy))
                .map(|p| Action::Execute(PolicyId::new(p)))
                .ok_or_else(|| "Choose a policy to execute.".into()),
            _ => Err("Unknown action.".into()),
        }
    }
}

/// A form posted by the signed-in browser from the console's own page, or the answer refusing
/// it.
fn checked_form(
    state: &AppState,
    req: &HttpRequest,
    body: &[u8],
) -> Result<(String, Session, ActionForm), Box<HttpResponse>> {
    let Some((sid, session)) = signed_in(state, req) else {
        return Err(Box::new(see_other("/")));
    };
    let form = serde_urlencoded::from_bytes::<ActionForm>(body).unwrap_or_default();
    if !same_origin(state, req) || !constant_time_eq(form.csrf.as_bytes(), session.csrf.as_bytes())
    {
        return Err(Box::new(refused(
            "This form must be sent from the console's own page.",
        )));
    }
    Ok((sid, session, form))
}

/// An action's form on group `id`, checked as [`checked_form`] does, with the group (of the
/// session's tenant), or the answer refusing it.
async fn action_on_group(
    state: &AppState,
    req: &HttpRequest,
    id: &str,
    body: &[u8],
) -> Result<
    (
        String,
        Session,
        ActionForm,
        flotilla_actors::domain::group::Group,
    ),
    Box<HttpResponse>,
> {
    let (sid, session, form) = checked_form(state, req, body)?;
    let group = owned_group(state, &session, id).await?;
    Ok((sid, session, form, group))
}

async fn confirm(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (sid, session, form, group) = match action_on_group(&state, &req, &path, &body).await {
        Ok(checked) => checked,
        Err(answer) => return *answer,
    };
    let back = format!("/console/groups/{}", group.id);
    match Action::of(&form) {
        Ok(action) => {
            let policy = match &action {
                Action::Execute(pid) => match policy_of(&state, &session, &group.id, pid).await {
                    Some(policy) => Some(policy),
                    None => {
                        state.sessions.flash(
                            &sid,
                            Flash {
                                error: true,
                                text: "That policy is not one of this group's.".into(),
                            },
                        );
                        return see_other(&back);
                    }
                },
                _ => None,
            };
            html(
                StatusCode::OK,
                pages::confirm(&session, &group, &action, policy.as_ref()),
            )
        }
        Err(text) => {
            state.sessions.flash(&sid, Flash { error: true, text });
            see_other(&back)
        }
    }
}

async fn policy_of(
    state: &AppState,
    session: &Session,
    group: &GroupId,
    pid: &PolicyId,
) -> Option<flotilla_actors::domain::policy::Policy> {
    let id =
        resource::owned::<Policies>(state, &session.tenant, pid.as_str(), Some(group.as_str()))
            .await
            .ok()?;
    resource::load::<Policies>(state, &id).await.ok()
}

async fn act(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    let (sid, session, form, group) = match action_on_group(&state, &req, &path, &body).await {
        Ok(checked) => checked,
        Err(answer) => return *answer,
    };
    let back = format!("/console/groups/{}", group.id);
    let flash = match Action::of(&form) {
        Ok(action) => done(&state, &session, &group, action).await,
        Err(text) => Flash { error: true, text },
    };
    state.sessions.flash(&sid, flash);
    see_other(&back)
}

/// Does `action` through the same commands the API's endpoints send, and says what came of it.
async fn done(
    state: &AppState,
    session: &Session,
    group: &flotilla_actors::domain::group::Group,
    action: Action,
) -> Flash {
    let id = group.id.as_str();
    let answer = match action {
        Action::Pause(pause) => state
            .execute::<Groups>(id, GroupCommand::Pause(pause))
            .await
            .map(|_| {
                let directions = match (pause.scale_in, pause.scale_out) {
                    (true, true) => "scale-in and scale-out",
                    (true, false) => "scale-in",
                    _ => "scale-out",
                };
                format!("Paused {directions}.")
            }),
        Action::Resume => state
            .execute::<Groups>(id, GroupCommand::Resume)
            .await
            .map(|_| "Resumed: policies execute in both directions.".to_owned()),
        Action::Desired(to) => {
            let patch = GroupPatch {
                desired_capacity: Some(to),
                ..GroupPatch::default()
            };
            state
                .execute::<Groups>(id, GroupCommand::Update(patch))
                .await
                .map(|executed| {
                    // From what the command met, not the page's read: it may have changed.
                    let from = executed.events.iter().find_map(|event| match event {
                        GroupEvent::CapacityChanged { from, .. } => Some(*from),
                        _ => None,
                    });
                    match from {
                        Some(from) => format!("Desired capacity set to {to} (it was {from})."),
                        None => format!("Desired capacity is already {to}."),
                    }
                })
        }
        Action::Execute(pid) => match policy_of(state, session, &group.id, &pid).await {
            None => return Flash {
                error: true,
                text: "That policy is not one of this group's.".into(),
            },
            Some(policy) => state
                .supervisor
                .execute_policy(&policy.id, Cause::Direct, None)
                .await
                .map_err(crate::api::ApiError::from)
                .map(|run| {
                    let name = &policy.definition.name;
                    match run.outcome {
                        Outcome::Executed { from, to, .. } => {
                            format!("Executed {name}: capacity {from} → {to}.")
                        }
                        Outcome::NoChange { capacity } => {
                            format!("Executed {name}: no change (capacity stays {capacity}).")
                        }
                        Outcome::Cooldown {
                            retry_after_seconds,
                        } => format!(
                            "{name} did not execute: the group is cooling down for {retry_after_seconds} s more."
                        ),
                        Outcome::Paused => {
                            format!("{name} did not execute: that direction is paused.")
                        }
                        Outcome::Shadow { from, to, .. } => format!(
                            "{name} is in shadow mode: it would have moved capacity {from} → {to}; nothing changed."
                        ),
                    }
                }),
        },
    };
    match answer {
        Ok(text) => Flash { error: false, text },
        Err(error) => Flash {
            error: true,
            text: format!("Not done: {}", error.message()),
        },
    }
}
