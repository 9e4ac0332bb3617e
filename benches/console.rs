//! The console's group page, served by the real service over HTTP: a group with 10,000
//! activity entries spread over the last 7 days (policy executions moving its capacity up and
//! down, made through the API on a manual clock stepped a minute at a time), its page with
//! the 7-day range (the whole history read from the journal, folded, plotted and the newest
//! 50 entries rendered), beside the same group's newest 100 activity entries through the JSON
//! API (`GET /v1/groups/{id}/activity`) in the same run. The target: the page in under 100 ms.
//! Then the same group's page for its last 24 hours, which folds from the start of that day
//! the first page kept (`console::history::DayStart`) rather than from the stream's first
//! record.
//!
//! `cargo bench --bench console`

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use flotilla::settings::Settings;
use flotilla::ticks::{ManualTicks, Ticks};
use flotilla_actors::clock::{Clock, ManualClock, Timestamp};
use reqwest::blocking::Client;
use serde_json::{json, Value};

#[path = "../tests/common/serve.rs"]
mod serve;

/// Activity entries the group gets.
const ENTRIES: usize = 10_000;

fn call(client: &Client, base: &str, path: &str, token: &str, body: Value) -> Value {
    let answer = client
        .post(format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .unwrap();
    assert!(answer.status().is_success(), "{path}: {}", answer.status());
    answer.json().unwrap()
}

fn group_page(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    // The clock starts 7 days ago and steps a minute between entries: 10,000 minutes is just
    // under 7 days.
    let clock = ManualClock::new(Timestamp::from_secs(now - 7 * 86_400 + 3_600));
    let settings = Settings {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.path().join("data"),
        ..Settings::default()
    };
    let running = serve::Running::start(
        settings,
        Arc::new(clock.clone()),
        Ticks::Manual(ManualTicks::new()),
    );
    running.wait_ready(Duration::from_secs(60));
    let base = format!("http://{}", running.addr);
    let client = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let tenant = call(
        &client,
        &base,
        "/v1/tenants",
        &running.operator_token,
        json!({"name": "bench"}),
    );
    let token = tenant["token"].as_str().unwrap().to_owned();
    let group = call(
        &client,
        &base,
        "/v1/groups",
        &token,
        json!({"name": "web", "min_size": 0, "max_size": 50, "desired_capacity": 10,
               "cooldown_seconds": 0, "launch": {"provider": "simulated"}}),
    );
    let gid = group["id"].as_str().unwrap().to_owned();
    let policy = |name: &str, adjustment: i64| {
        call(
            &client,
            &base,
            &format!("/v1/groups/{gid}/policies"),
            &token,
            json!({"name": name, "adjustment_type": "change", "adjustment": adjustment}),
        )["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (up, down) = (policy("up", 3), policy("down", -2));
    eprintln!("console bench: {ENTRIES} executions over 7 days...");
    for i in 0..ENTRIES {
        clock.advance_secs(60);
        // Up twice, down three times: capacity wanders between the bounds.
        let pid = if i % 5 < 2 { &up } else { &down };
        call(
            &client,
            &base,
            &format!("/v1/groups/{gid}/policies/{pid}/execute"),
            &token,
            json!({}),
        );
    }
    let _ = clock.now();
    // Sign in as a browser would.
    let signed = client
        .post(format!("{base}/console/sign-in"))
        .form(&[("token", token.as_str())])
        .send()
        .unwrap();
    let cookie = signed.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = format!("{base}/console/groups/{gid}?range=7d");
    let first = client.get(&page).header("cookie", &cookie).send().unwrap();
    assert_eq!(first.status(), 200);
    let html = first.text().unwrap();
    assert!(
        html.contains(&format!("{ENTRIES} policy executions")),
        "the page shows them all"
    );
    eprintln!("console bench: the page is {} bytes", html.len());

    let mut bench = c.benchmark_group("console");
    bench.sample_size(30);
    bench.measurement_time(Duration::from_secs(10));
    bench.bench_function("group_page_7d_10000_entries", |b| {
        b.iter(|| {
            let answer = client.get(&page).header("cookie", &cookie).send().unwrap();
            assert_eq!(answer.status(), 200);
            answer.bytes().unwrap()
        });
    });
    // The last day of the same 7: the page folds from the start of its day the 7-day page
    // kept, about a seventh of the records, where it folded the whole stream before.
    let day_page = format!("{base}/console/groups/{gid}?range=24h");
    bench.bench_function("group_page_24h_of_7d_10000_entries", |b| {
        b.iter(|| {
            let answer = client
                .get(&day_page)
                .header("cookie", &cookie)
                .send()
                .unwrap();
            assert_eq!(answer.status(), 200);
            answer.bytes().unwrap()
        });
    });
    let activity = format!("{base}/v1/groups/{gid}/activity");
    bench.bench_function("baseline_activity_api_100_entries", |b| {
        b.iter(|| {
            let answer = client.get(&activity).bearer_auth(&token).send().unwrap();
            assert_eq!(answer.status(), 200);
            answer.bytes().unwrap()
        });
    });
    bench.finish();
}

criterion_group!(benches, group_page);
criterion_main!(benches);
