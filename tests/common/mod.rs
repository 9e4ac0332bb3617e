//! The real service on a loopback port and a temporary data directory, driven over HTTP, with
//! a manual clock and manual ticks so time-based rules and background loops are tested without
//! sleeping.
#![allow(dead_code)]

pub mod external;
pub mod orchestrator;
pub mod serve;
pub mod world;

use std::sync::Arc;
use std::time::Duration;

use flotilla::settings::Settings;
use flotilla::ticks::{ManualTicks, Ticks};
use flotilla_actors::clock::{ManualClock, Timestamp};
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

/// The real time now, for tests that meet a real program's clock.
pub fn real_now() -> Timestamp {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    Timestamp::from_millis(since.as_millis() as i64)
}

/// A journal in `dir` of ten events over two objects (`group-a`, `group-b`), one a second from
/// 2026-11-25T00:00:00Z: for the journal tools' tests.
pub fn seed_journal(dir: &std::path::Path) {
    use flotilla_journal::{ExpectedVersion, Journal, NewEvent};
    let journal = Journal::open(dir).unwrap();
    let start = 1_795_564_800_000i64;
    for n in 0..10i64 {
        let stream = if n % 2 == 0 { "group-a" } else { "group-b" };
        let event = NewEvent::json("thing_happened", 1, start + n * 1000, &n).unwrap();
        journal
            .append(stream, ExpectedVersion::Any, vec![event])
            .unwrap();
    }
}

/// 2026-11-25T00:00:00Z, in seconds.
pub const START_SECS: i64 = 1_795_564_800;

pub struct Server {
    pub base: String,
    pub operator_token: String,
    pub clock: ManualClock,
    /// The background loops' ticks: nothing ticks until the test says so.
    pub ticks: ManualTicks,
    pub client: Client,
    pub dir: tempfile::TempDir,
    settings: Settings,
    running: Option<serve::Running>,
}

impl Server {
    pub fn start() -> Server {
        Self::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("data"),
            // Tests step whole periods; the delay has a test of its own.
            evaluation_delay_seconds: 0,
            ..Settings::default()
        };
        adjust(&mut settings);
        let clock = ManualClock::new(Timestamp::from_secs(START_SECS));
        Self::start_in(dir, settings, clock)
    }

    /// The service with its manual clock at the real time now: for tests where a real program
    /// (Prometheus) stamps samples with the real time. The clock still moves only when told.
    pub fn start_now() -> Server {
        Self::start_now_with(|_| {})
    }

    /// [`Server::start_now`] with `adjust`ed settings.
    pub fn start_now_with(adjust: impl FnOnce(&mut Settings)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings {
            listen: "127.0.0.1:0".into(),
            data_dir: dir.path().join("data"),
            ..Settings::default()
        };
        adjust(&mut settings);
        let clock = ManualClock::new(real_now());
        Self::start_in(dir, settings, clock)
    }

    /// Moves the clock to the real time now, if that is later.
    pub fn catch_up_with_real_time(&self) {
        use flotilla_actors::clock::Clock;
        let now = real_now();
        if now > self.clock.now() {
            self.clock.set(now);
        }
    }

    /// Starts the service in `dir` on `settings`, its clock at `clock`'s now, and waits until it
    /// is ready.
    fn start_in(dir: tempfile::TempDir, settings: Settings, clock: ManualClock) -> Server {
        let ticks = ManualTicks::new();
        let running = serve::Running::start(
            settings.clone(),
            Arc::new(clock.clone()),
            Ticks::Manual(ticks.clone()),
        );
        running.wait_ready(Duration::from_secs(30));
        Server {
            base: format!("http://{}", running.addr),
            operator_token: running.operator_token.clone(),
            clock,
            ticks,
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            dir,
            settings,
            running: Some(running),
        }
    }

    /// Stops the server and starts a new one on the same data directory (a clean restart), its
    /// clock where the old one's was.
    pub fn restart(mut self) -> Server {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let settings = Settings {
            listen: "127.0.0.1:0".into(),
            ..self.settings.clone()
        };
        let clock = ManualClock::new(flotilla_actors::clock::Clock::now(&self.clock));
        Self::start_in(dir, settings, clock)
    }

    /// [`Server::restart`], listening on the same port again: for a real program (Alertmanager)
    /// configured with the service's URL.
    pub fn restart_on_the_same_port(mut self) -> Server {
        let listen = self.base.trim_start_matches("http://").to_owned();
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        let settings = Settings {
            listen,
            ..self.settings.clone()
        };
        let clock = ManualClock::new(flotilla_actors::clock::Clock::now(&self.clock));
        Self::start_in(dir, settings, clock)
    }

    fn stop(&mut self) {
        if let Some(mut running) = self.running.take() {
            running.stop();
        }
    }

    /// One tick of every background loop (alarms, converger, checkpoint, idle actors, rate
    /// limits), each finished when this returns.
    pub fn tick(&self) {
        self.ticks.tick();
    }

    /// Ticks until `check` holds, at most `ticks` times; the clock does not move.
    pub fn tick_until(&self, what: &str, ticks: usize, mut check: impl FnMut() -> bool) {
        for _ in 0..ticks {
            if check() {
                return;
            }
            self.tick();
        }
        assert!(check(), "{what}: not after {ticks} ticks");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Unix seconds on the service's clock.
    pub fn now_secs(&self) -> i64 {
        use flotilla_actors::clock::Clock;
        self.clock.now().as_millis() / 1000
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        self.request("GET", "/metrics", None)
            .send()
            .unwrap()
            .text()
            .unwrap()
    }

    /// A gauge's value in `/metrics`.
    pub fn gauge(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics"))
    }

    pub fn request(&self, method: &str, path: &str, token: Option<&str>) -> RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends JSON (or nothing) and returns the status and the JSON body (Null when empty).
    pub fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut builder = self.request(method, path, Some(token));
        if let Some(body) = body {
            builder = builder.json(&body);
        }
        read(builder.send().unwrap())
    }

    /// The whole journal as `GET /v1/journal` exports it (one JSON record a line, then the
    /// trailer), read with the operator token.
    pub fn journal_export(&self) -> String {
        let export = self.request("GET", "/v1/journal", Some(&self.operator_token));
        export.send().unwrap().text().unwrap()
    }

    /// The console's page at `path` as the HTML an operator signed in with `token` gets.
    pub fn console_page(&self, token: &str, path: &str) -> String {
        let signed = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(self.url("/console/sign-in"))
            .header("origin", &self.base)
            .header("sec-fetch-site", "same-origin")
            .form(&[("token", token)])
            .send()
            .unwrap();
        assert_eq!(signed.status(), 303, "signing in to the console");
        let cookie = signed.headers()["set-cookie"].to_str().unwrap();
        let cookie = cookie.split(';').next().unwrap().to_owned();
        let page = self.request("GET", path, None).header("cookie", cookie);
        let page = page.send().unwrap();
        assert_eq!(page.status(), 200, "{path}");
        page.text().unwrap()
    }

    pub fn tenant(&self, name: &str) -> String {
        let (status, body) = self.call(
            "POST",
            "/v1/tenants",
            &self.operator_token,
            Some(json!({"name": name})),
        );
        assert_eq!(status, 201, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    pub fn group(&self, token: &str, min: u32, max: u32, desired: u32, cooldown: u32) -> String {
        let (status, body) = self.call(
            "POST",
            "/v1/groups",
            token,
            Some(
                json!({"name": "web", "min_size": min, "max_size": max, "desired_capacity": desired,
                        "cooldown_seconds": cooldown, "launch": {"provider": "simulated"}}),
            ),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub fn policy(&self, token: &str, group: &str, body: Value) -> String {
        let (status, body) = self.call(
            "POST",
            &format!("/v1/groups/{group}/policies"),
            token,
            Some(body),
        );
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub fn capacity(&self, token: &str, group: &str) -> u64 {
        let (status, body) = self.call("GET", &format!("/v1/groups/{group}"), token, None);
        assert_eq!(status, 200, "{body}");
        body["desired_capacity"].as_u64().unwrap()
    }

    /// A tenant, a group (0..100 at 0, no cooldown), a +1 policy and a webhook on it.
    pub fn webhook_setup(&self) -> Hook {
        let token = self.tenant("acme");
        let group = self.group(&token, 0, 100, 0, 0);
        let policy = self.policy(
            &token,
            &group,
            json!({"name": "up", "adjustment_type": "change", "adjustment": 1}),
        );
        self.webhook(&token, &group, &policy)
    }

    /// A webhook named `cpu-high` on `policy` of `group`.
    pub fn webhook(&self, token: &str, group: &str, policy: &str) -> Hook {
        let (status, body) = self.call(
            "POST",
            &format!("/v1/groups/{group}/policies/{policy}/webhooks"),
            token,
            Some(json!({"name": "cpu-high"})),
        );
        assert_eq!(status, 201, "{body}");
        Hook {
            token: token.to_owned(),
            group: group.to_owned(),
            policy: policy.to_owned(),
            id: body["id"].as_str().unwrap().to_owned(),
            url: body["url"].as_str().unwrap().to_owned(),
            secret: body["secret"].as_str().unwrap().to_owned(),
        }
    }

    /// Posts `body` to `hook` signed with `secret`, nonce and timestamp in headers.
    pub fn send_hook(
        &self,
        hook: &Hook,
        secret: &str,
        nonce: &str,
        timestamp: i64,
        body: &[u8],
    ) -> (u16, Value) {
        let key = flotilla::signature::key_of(secret).unwrap();
        let signature = flotilla::signature::sign(&key, nonce, timestamp, body);
        self.send_raw(
            hook,
            nonce,
            &timestamp.to_string(),
            &signature,
            body.to_vec(),
        )
    }

    pub fn send_raw(
        &self,
        hook: &Hook,
        nonce: &str,
        timestamp: &str,
        signature: &str,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let response = self
            .client
            .post(&hook.url)
            .header("webhook-id", nonce)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        read(response)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn read(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    (status, body)
}

/// A webhook and everything around it.
#[derive(Clone, Debug)]
pub struct Hook {
    pub token: String,
    pub group: String,
    pub policy: String,
    pub id: String,
    pub url: String,
    pub secret: String,
}

/// Asserts an error answer: its status and code.
pub fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(answer.1["error"]["message"].is_string(), "{}", answer.1);
}
