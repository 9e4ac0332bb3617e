//! The web console's security over plain HTTP against the real service: its headers, its
//! session cookie, where a token may appear, and requests from other sites. (The console in a
//! real browser: `tests/console.rs`.)

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Server;
use reqwest::blocking::{Client, Response};
use reqwest::redirect::Policy;
use serde_json::json;

fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
struct Browser {
    base: String,
    cookie: String,
    csrf: String,
}

fn origin(base: &str) -> String {
    base.trim_end_matches('/').to_owned()
}

fn sign_in(base: &str, token: &str) -> Response {
    client()
        .post(format!("{base}/console/sign-in"))
        .header("origin", origin(base))
        .header("sec-fetch-site", "same-origin")
        .form(&[("token", token)])
        .send()
        .unwrap()
}

fn signed_in(base: &str, token: &str) -> Browser {
    let answer = sign_in(base, token);
    assert_eq!(answer.status(), 303);
    let cookie = answer
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = get(base, &cookie, "/").text().unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    Browser {
        base: base.to_owned(),
        cookie,
        csrf,
    }
}

fn get(base: &str, cookie: &str, path: &str) -> Response {
    client()
        .get(format!("{base}{path}"))
        .header("cookie", cookie)
        .send()
        .unwrap()
}

impl Browser {
    fn get(&self, path: &str) -> Response {
        get(&self.base, &self.cookie, path)
    }

    /// Posts `form` (with the session's CSRF token unless it has one) to `path`, with `headers`
    /// as the browser would set them.
    fn post(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Response {
        let mut fields: Vec<(&str, &str)> = form.to_vec();
        if !form.iter().any(|(k, _)| *k == "csrf") {
            fields.push(("csrf", &self.csrf));
        }
        let mut request = client()
            .post(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .form(&fields);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().unwrap()
    }

    fn same_site(&self) -> Vec<(&'static str, String)> {
        vec![
            ("origin", origin(&self.base)),
            ("sec-fetch-site", "same-origin".to_owned()),
        ]
    }
}

fn pause(server: &Server, token: &str, group: &str) -> serde_json::Value {
    let (status, body) = server.call("GET", &format!("/v1/groups/{group}"), token, None);
    assert_eq!(status, 200, "{body}");
    body["pause"].clone()
}

/// The console's HTML: no inline script, no inline style or event handler, and every link,
/// form and source on the service itself.
fn assert_self_contained(html: &str) {
    for (i, _) in html.match_indices("<script") {
        let tag_end = i + html[i..].find('>').unwrap();
        assert!(
            html[tag_end + 1..].starts_with("</script>"),
            "an inline script: {}",
            &html[i..(i + 120).min(html.len())]
        );
        assert!(
            html[i..tag_end].contains("src=\"/"),
            "{}",
            &html[i..tag_end]
        );
    }
    assert!(!html.contains("style="), "an inline style");
    assert!(!html.contains("javascript:"));
    for attribute in [" onclick=", " onload=", " onerror=", " onsubmit="] {
        assert!(!html.contains(attribute), "{attribute}");
    }
    for attribute in ["href=\"", "src=\"", "action=\""] {
        for (i, _) in html.match_indices(attribute) {
            let value = &html[i + attribute.len()..];
            assert!(
                value.starts_with('/') || value.starts_with('#') || value.starts_with('?'),
                "an off-site {attribute}{}",
                &value[..value.len().min(60)]
            );
        }
    }
}

#[test]
fn every_console_answer_forbids_inline_script_and_off_site_sources() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let base = server.url("");
    let browser = signed_in(&base, &hook.token);
    // A page's odd query is read leniently: a page, never the API's JSON error.
    for query in [
        "?range=7d&before=x",
        "?before=-1",
        "?range=%ZZ",
        "?range=1h&range=7d",
    ] {
        let page = browser.get(&format!("/console/groups/{}{query}", hook.group));
        assert_eq!(page.status(), 200, "{query}");
        assert!(
            page.text().unwrap().contains("<h2 id=\"capacity-h\">"),
            "{query}"
        );
    }
    assert_eq!(browser.get("/?cursor=%ZZ&cursor=x").status(), 200);
    let pages = [
        get(&base, "", "/"),
        sign_in(&base, "flo_wrong"),
        browser.get("/"),
        browser.get(&format!("/console/groups/{}", hook.group)),
        browser.get(&format!("/console/groups/{}?range=7d", hook.group)),
        browser.get("/console/groups/grp_nosuch"),
        get(&base, "", "/console/assets/app.js"),
        get(&base, "", "/console/assets/style.css"),
    ];
    for page in pages {
        let csp = page
            .headers()
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{} has no CSP", page.url()))
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(csp, flotilla::console::CSP);
        for loose in [
            "unsafe-inline",
            "unsafe-eval",
            "http:",
            "https:",
            "*",
            "data:",
        ] {
            assert!(!csp.contains(loose), "{csp}");
        }
        assert!(csp.contains("script-src 'self'") && csp.contains("default-src 'none'"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(page.headers()["x-content-type-options"], "nosniff");
        let html = page.text().unwrap();
        if html.starts_with("<!DOCTYPE html>") {
            assert_self_contained(&html);
        }
    }
}

#[test]
fn the_session_cookie_is_http_only_strict_and_expiring_and_the_token_is_in_no_url_or_page() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let base = server.url("");
    let answer = sign_in(&base, &hook.token);
    assert_eq!(answer.status(), 303);
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(location, "/");
    let cookie = answer.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("flotilla_console=flo_cs_"), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=28800"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    assert!(!cookie.contains(&hook.token));
    let browser = signed_in(&base, &hook.token);
    for path in [
        "/".to_owned(),
        format!("/console/groups/{}", hook.group),
        format!("/console/groups/{}?range=1h", hook.group),
    ] {
        let page = browser.get(&path);
        assert_eq!(page.status(), 200, "{path}");
        let html = page.text().unwrap();
        assert!(!html.contains(&hook.token), "the token in {path}");
        assert!(!html.contains(&hook.secret), "a webhook's secret in {path}");
    }
    // The confirmation page carries the action, never the token.
    let confirm = browser.post(
        &format!("/console/groups/{}/confirm", hook.group),
        &[("action", "desired"), ("desired", "4")],
        &[],
    );
    assert_eq!(confirm.status(), 200);
    assert!(!confirm.text().unwrap().contains(&hook.token));
}

#[test]
fn a_wrong_token_is_a_clear_401_and_another_tenants_group_is_the_same_404_as_a_missing_one() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let base = server.url("");
    let wrong = sign_in(&base, "flo_not_a_token");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    let page = wrong.text().unwrap();
    assert!(
        page.contains("That token is not a tenant's token here"),
        "{page}"
    );
    let empty = sign_in(&base, "");
    assert_eq!(empty.status(), 401);

    let other = server.tenant("globex");
    let theirs = server.group(&other, 0, 5, 1, 0);
    let browser = signed_in(&base, &hook.token);
    let missing = browser.get("/console/groups/grp_nosuch");
    let foreign = browser.get(&format!("/console/groups/{theirs}"));
    assert_eq!(
        (missing.status().as_u16(), foreign.status().as_u16()),
        (404, 404)
    );
    let (missing, foreign) = (missing.text().unwrap(), foreign.text().unwrap());
    assert_eq!(missing, foreign);
    assert!(!foreign.contains(&theirs));
    // Nor can an action reach it.
    let acted = browser.post(
        &format!("/console/groups/{theirs}/act"),
        &[("action", "pause"), ("scale_in", "on")],
        &browser
            .same_site()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    assert_eq!(acted.status(), 404);
    assert_eq!(
        pause(&server, &other, &theirs),
        json!({"scale_in": false, "scale_out": false})
    );
    // A signed-out browser is sent to sign in, whatever the group.
    let anonymous = get(&base, "", &format!("/console/groups/{}", hook.group));
    assert_eq!(anonymous.status(), 303);
    assert_eq!(anonymous.headers()["location"], "/");
}

#[test]
fn cross_site_requests_that_change_state_are_refused() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let base = server.url("");
    let browser = signed_in(&base, &hook.token);
    let act = format!("/console/groups/{}/act", hook.group);
    let form = [("action", "pause"), ("scale_in", "on"), ("scale_out", "on")];
    let same = browser.same_site();
    let same: Vec<(&str, &str)> = same.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let refused = [
        // Another site's page, by what the browser says of it.
        browser.post(&act, &form, &[("origin", "https://evil.example")]),
        browser.post(&act, &form, &[("sec-fetch-site", "cross-site")]),
        browser.post(&act, &form, &[("sec-fetch-site", "same-site")]),
        browser.post(&act, &form, &[("origin", "null")]),
        // Without the session's token, or with another.
        browser.post(&act, &[("csrf", ""), form[0], form[1]], &same),
        browser.post(&act, &[("csrf", "flo_csrf_guess"), form[0], form[1]], &same),
    ];
    for answer in refused {
        assert_eq!(answer.status(), 403);
    }
    assert_eq!(
        pause(&server, &hook.token, &hook.group),
        json!({"scale_in": false, "scale_out": false}),
        "nothing changed"
    );
    // Signing in from another site is refused too (a login CSRF).
    let login = client()
        .post(format!("{base}/console/sign-in"))
        .header("origin", "https://evil.example")
        .form(&[("token", hook.token.as_str())])
        .send()
        .unwrap();
    assert_eq!(login.status(), 403);
    assert!(login.headers().get("set-cookie").is_none());
    // The console's own form goes through.
    let done = browser.post(&act, &form, &same);
    assert_eq!(done.status(), 303);
    assert_eq!(
        pause(&server, &hook.token, &hook.group),
        json!({"scale_in": true, "scale_out": true})
    );
    let page = browser
        .get(&format!("/console/groups/{}", hook.group))
        .text()
        .unwrap();
    assert!(
        page.contains("Paused scale-in and scale-out."),
        "the outcome"
    );
    // Bad forms are a clear refusal, never a fault.
    for form in [
        vec![("action", "desired"), ("desired", "lots")],
        vec![("action", "desired"), ("desired", "99999999999999999999")],
        vec![("action", "execute"), ("policy", "../../etc")],
        vec![("action", "pause")],
        vec![("action", "launch_missiles")],
    ] {
        let answer = browser.post(&act, &form, &same);
        assert_eq!(answer.status(), 303, "{form:?}");
        let page = browser
            .get(&format!("/console/groups/{}", hook.group))
            .text()
            .unwrap();
        assert!(page.contains("Not done."), "{form:?}");
    }
    let outside = browser.post(&act, &[("action", "desired"), ("desired", "1000")], &same);
    assert_eq!(outside.status(), 303);
    let page = browser
        .get(&format!("/console/groups/{}", hook.group))
        .text()
        .unwrap();
    assert!(page.contains("Not done: "), "the bounds' refusal, named");
    // A change says what it met (the group of `webhook_setup` starts at 0), and the same
    // change again that there was nothing to change.
    let flash_of = |desired: &str| {
        let answer = browser.post(&act, &[("action", "desired"), ("desired", desired)], &same);
        assert_eq!(answer.status(), 303);
        browser
            .get(&format!("/console/groups/{}", hook.group))
            .text()
            .unwrap()
    };
    let page = flash_of("4");
    assert!(
        page.contains("Desired capacity set to 4 (it was 0)."),
        "{page}"
    );
    let page = flash_of("4");
    assert!(page.contains("Desired capacity is already 4."), "{page}");
}

#[test]
fn signing_out_or_a_new_token_for_the_tenant_ends_the_session() {
    let server = Server::start();
    let operator = server.operator_token.clone();
    let (status, tenant) = server.call(
        "POST",
        "/v1/tenants",
        &operator,
        Some(json!({"name": "acme"})),
    );
    assert_eq!(status, 201, "{tenant}");
    let token = tenant["token"].as_str().unwrap().to_owned();
    let group = server.group(&token, 0, 5, 1, 0);
    let base = server.url("");
    let browser = signed_in(&base, &token);
    let same = browser.same_site();
    let same: Vec<(&str, &str)> = same.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let out = browser.post("/console/sign-out", &[], &same);
    assert_eq!(out.status(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let after = browser.get(&format!("/console/groups/{group}"));
    assert_eq!(after.status(), 303, "the old cookie signs nothing in");

    let browser = signed_in(&base, &token);
    assert_eq!(browser.get("/").status(), 200);
    let (status, body) = server.call(
        "POST",
        &format!("/v1/tenants/{}/token", tenant["id"].as_str().unwrap()),
        &operator,
        None,
    );
    assert!(status == 200 || status == 201, "{status} {body}");
    let page = browser.get("/").text().unwrap();
    assert!(
        page.contains("<h1>Sign in</h1>"),
        "a new token ends the session"
    );
    // Sessions end on the service clock too.
    let browser = signed_in(&base, body["token"].as_str().unwrap());
    assert_eq!(browser.get("/").status(), 200);
    server
        .clock
        .advance_secs(flotilla::console::session::TTL_SECONDS);
    let page = browser.get("/").text().unwrap();
    assert!(page.contains("<h1>Sign in</h1>"), "expired");
}

#[test]
fn a_token_never_reaches_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::external::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--data-dir", dir.path().to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    common::external::wait_for("ready", Duration::from_secs(20), || {
        client()
            .get(format!("{base}/readyz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let operator = std::fs::read_to_string(dir.path().join("operator.token"))
        .unwrap()
        .trim()
        .to_owned();
    let tenant: serde_json::Value = client()
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(&operator)
        .json(&json!({"name": "acme"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let token = tenant["token"].as_str().unwrap().to_owned();
    let group: serde_json::Value = client()
        .post(format!("{base}/v1/groups"))
        .bearer_auth(&token)
        .json(
            &json!({"name": "web", "min_size": 0, "max_size": 3, "desired_capacity": 0,
                      "launch": {"provider": "simulated"}}),
        )
        .send()
        .unwrap()
        .json()
        .unwrap();
    let gid = group["id"].as_str().unwrap();
    assert_eq!(sign_in(&base, "flo_wrong_one").status(), 401);
    let browser = signed_in(&base, &token);
    assert_eq!(browser.get(&format!("/console/groups/{gid}")).status(), 200);
    let same = browser.same_site();
    let same: Vec<(&str, &str)> = same.iter().map(|(k, v)| (*k, v.as_str())).collect();
    browser.post(
        &format!("/console/groups/{gid}/act"),
        &[("action", "desired"), ("desired", "2")],
        &same,
    );
    browser.post("/console/sign-out", &[], &same);
    child.kill().unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    child.wait().unwrap();
    assert!(
        log.contains("console sign-in with an unknown token"),
        "{log}"
    );
    let session = browser.cookie.split_once('=').unwrap().1;
    for secret in [
        token.as_str(),
        "flo_wrong_one",
        operator.as_str(),
        session,
        browser.csrf.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret in the log");
    }
}
