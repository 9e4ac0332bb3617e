//! The web console (SPEC 8) in a real headless Chromium driven through chromedriver
//! (WebDriver, with fantoccini), against the real service: sign in, see the group a webhook
//! resized, its plot and its timeline, pause scale-in from the console and see it in the API,
//! sign out. It writes a screenshot of the group page at 1280×800 for a person to look at.
//! Without Chromium and chromedriver it skips with a message; with
//! `FLOTILLA_REQUIRE_EXTERNAL=1` it fails.
//!
//! The security of the console (its headers, its session cookie, cross-site requests, where
//! the token may appear) is tested over plain HTTP in `tests/console_security.rs`.

mod common;

use std::time::Duration;

use common::external::{available, free_port, wait_for, Running};
use common::Server;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

const BODY: &[u8] = br#"{"alarm":"cpu-high","value":0.93}"#;

/// chromedriver on a loopback port, and a headless Chromium session through it at 1280×800.
async fn browser(port: u16, profile: &std::path::Path) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--no-first-run", "--disable-extensions",
                     "--lang=en-US",
                     format!("--user-data-dir={}", profile.display())],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a Chromium session through chromedriver")
}

/// The text of the first element `css` finds, once `until` holds for it: the browser loads a
/// page after a click on its own time, so this asks again (within 10 s) rather than read the
/// page being left.
async fn text_until(client: &Client, css: &str, until: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = match client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if until(&text) {
            return text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css}: last read {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn text_of(client: &Client, css: &str) -> String {
    text_until(client, css, |text| !text.is_empty()).await
}

#[test]
fn in_chromium_an_operator_signs_in_sees_a_webhooks_change_and_pauses_scale_in() {
    if !available("chromium") || !available("chromedriver") {
        return;
    }
    let server = Server::start_now();
    let hook = server.webhook_setup();
    // Over the next hours a webhook fires three times, two hours apart: the group goes from 0
    // to 3, its servers following at each converger tick.
    for (i, nonce) in ["msg_1", "msg_2", "msg_3"].iter().enumerate() {
        server.clock.advance_secs(2 * 3600);
        let now = server.now_secs();
        let (status, body) = server.send_hook(&hook, &hook.secret, nonce, now, BODY);
        assert_eq!(status, 202, "{body}");
        assert_eq!(server.capacity(&hook.token, &hook.group), i as u64 + 1);
        server.tick_until("servers follow", 10, || {
            let (_, group) = server.call(
                "GET",
                &format!("/v1/groups/{}", hook.group),
                &hook.token,
                None,
            );
            group["active"] == i + 1
        });
    }
    server.clock.advance_secs(3600);

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The browser in a zone of its own, to see times shown in the viewer's zone.
    let _driver = Running::start(
        "env",
        &[
            "TZ=Asia/Tokyo".to_owned(),
            "chromedriver".to_owned(),
            format!("--port={port}"),
        ],
        &dir.path().join("chromedriver.log"),
    );
    wait_for("chromedriver", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let base = server.url("");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-group-page.png");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = browser(port, &dir.path().join("profile")).await;

        // A wrong token is refused with a clear message.
        client.goto(&base).await.unwrap();
        let token = client.find(Locator::Id("token")).await.unwrap();
        token.send_keys("flo_wrong").await.unwrap();
        token.send_keys("\u{E007}").await.unwrap(); // Enter
        let refused = text_until(&client, "p.flash.error", |t| t.contains("Not signed in")).await;
        assert!(refused.contains("not a tenant's token"), "{refused}");

        // The right one signs in, and the groups page lists the group at its new capacity.
        let token = client.find(Locator::Id("token")).await.unwrap();
        token.send_keys(&hook.token).await.unwrap();
        client
            .find(Locator::Css("form.card button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        text_until(&client, "h1", |t| t == "Groups").await;
        let row = format!("a[href='/console/groups/{}']", hook.group);
        let desired = client
            .find(Locator::XPath(&format!(
                "//a[@href='/console/groups/{}']/ancestor::tr/td[contains(@class,'desired')]",
                hook.group
            )))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(desired, "3");
        let url = client.current_url().await.unwrap();
        assert!(!url.as_str().contains(&hook.token), "{url}");

        // The group's page: the plot has a point where the policy executed...
        client.find(Locator::Css(&row)).await.unwrap().click().await.unwrap();
        text_until(&client, "#desired", |t| t == "3").await;
        assert_eq!(text_of(&client, "#active").await, "3");
        let markers = client.find_all(Locator::Css("svg circle.marker")).await.unwrap();
        assert_eq!(markers.len(), 3, "each execution marked");
        let plot = client
            .find(Locator::Css("figure.plot svg"))
            .await
            .unwrap()
            .attr("aria-labelledby")
            .await
            .unwrap();
        assert_eq!(plot.as_deref(), Some("plot-title plot-desc"));
        let described = client
            .execute("return document.getElementById('plot-desc').textContent;", vec![])
            .await
            .unwrap();
        let described = described.as_str().unwrap_or_default();
        assert!(described.contains("Desired capacity 3 and 3 active"), "{described}");
        assert!(described.contains("3 policy executions"), "{described}");
        // ...and the timeline's newest entry names the webhook and the policy, with the
        // servers the change launched.
        let entry = text_of(&client, "ol.timeline li.entry").await;
        assert!(entry.contains("webhook cpu-high"), "{entry}");
        assert!(entry.contains("Policy up"), "{entry}");
        assert!(entry.contains("2 → 3"), "{entry}");
        assert!(entry.contains("Servers launched"), "{entry}");
        // Times are shown in the viewer's zone by the page's script, UTC on hover.
        let time = client.find(Locator::Css("ol.timeline time")).await.unwrap();
        let title = time.attr("title").await.unwrap().unwrap();
        assert!(title.ends_with("Z UTC"), "{title}");
        let shown = time.text().await.unwrap();
        assert!(shown.ends_with("GMT+9"), "in the viewer's zone: {shown}");
        // The window's frame takes part of the window's 800 pixels: make the page's own
        // viewport 1280×800.
        let frame = client
            .execute("return [window.outerWidth - window.innerWidth, window.outerHeight - window.innerHeight];", vec![])
            .await
            .unwrap();
        let (dw, dh) = (frame[0].as_u64().unwrap_or(0), frame[1].as_u64().unwrap_or(0));
        client
            .set_window_size(1280 + dw as u32, 800 + dh as u32)
            .await
            .unwrap();
        let png = client.screenshot().await.unwrap();
        std::fs::write(&shot, png).unwrap();
        eprintln!("the group page at 1280×800: {}", shot.display());
        // On a phone's narrow screen the page fits its width (wide tables scroll within
        // themselves), and keyboard focus reaches the actions.
        client
            .set_window_size(390 + dw as u32, 800 + dh as u32)
            .await
            .unwrap();
        let overflow = client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        let wide = client
            .execute(
                "return Array.from(document.querySelectorAll('body *'))\
                 .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth + 1\
                    || (e.scrollWidth > e.clientWidth + 1 && getComputedStyle(e).overflowX === 'visible' && e.clientWidth > 0))\
                 .slice(0, 5).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right))\
                 .concat([document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth, document.body.scrollWidth]);",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(overflow.as_i64(), Some(0), "the page scrolls sideways: {wide}");
        let focusable = client
            .execute(
                "return Array.from(document.querySelectorAll('a[href], button, input:not([type=hidden]), select'))\
                 .filter(e => e.tabIndex >= 0).map(e => e.id || e.name || e.textContent.trim());",
                vec![],
            )
            .await
            .unwrap();
        let focusable = focusable.to_string();
        for control in ["pause", "resume", "set-desired", "execute", "Sign out"] {
            assert!(focusable.contains(control), "{control} in {focusable}");
        }
        client
            .set_window_size(1280 + dw as u32, 800 + dh as u32)
            .await
            .unwrap();
        let source = client.source().await.unwrap();
        assert!(!source.contains(&hook.token), "the token is not in the page");
        assert!(!source.contains(&hook.secret), "nor the webhook's secret");

        // Pause scale-in, confirmed on a page of its own.
        client
            .find(Locator::Css("input[name=scale_in]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        client.find(Locator::Id("pause")).await.unwrap().click().await.unwrap();
        let what = text_until(&client, "#confirm-what", |t| !t.is_empty()).await;
        assert!(what.contains("Pause scale-in"), "{what}");
        client.find(Locator::Id("confirm")).await.unwrap().click().await.unwrap();
        let done = text_until(&client, "p.flash", |t| t.starts_with("Done")).await;
        assert!(done.contains("Paused scale-in."), "{done}");
        assert_eq!(text_of(&client, "#paused").await, "scale-in");
        let entry = text_of(&client, "ol.timeline li.entry").await;
        assert!(entry.contains("Paused scale-in"), "{entry}");

        // Signing out ends the session: the group's page asks to sign in again.
        client
            .find(Locator::Css("form.sign-out button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        text_until(&client, "h1", |t| t == "Sign in").await;
        client
            .goto(&format!("{base}/console/groups/{}", hook.group))
            .await
            .unwrap();
        text_until(&client, "h1", |t| t == "Sign in").await;
        client.close().await.unwrap();
    });

    // The pause shows in the API.
    let (status, body) = server.call(
        "GET",
        &format!("/v1/groups/{}", hook.group),
        &hook.token,
        None,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pause"], json!({"scale_in": true, "scale_out": false}));
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[1..4], b"PNG");
}
