//! Signed webhooks end to end (SPEC section 4): what is accepted, and every attack refused.

mod common;

use common::{assert_error, Hook, Server};
use serde_json::json;

const BODY: &[u8] = br#"{"alarm":"cpu-high","value":0.93}"#;

fn accepted(answer: &(u16, serde_json::Value)) {
    assert_eq!(answer.0, 202, "{}", answer.1);
    assert_eq!(answer.1["outcome"], "executed", "{}", answer.1);
}

#[test]
fn a_request_signed_by_an_independent_implementation_is_accepted() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let signer = standardwebhooks::Webhook::new(&hook.secret).unwrap();
    let now = server.now_secs();
    let signature = signer.sign("msg_independent", now, BODY).unwrap();
    let answer = server.send_raw(
        &hook,
        "msg_independent",
        &now.to_string(),
        &signature,
        BODY.to_vec(),
    );
    accepted(&answer);
    assert_eq!(answer.1["to"], 1);
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);
    // The activity names the webhook as the cause.
    let (_, activity) = server.call(
        "GET",
        &format!("/v1/groups/{}/activity", hook.group),
        &hook.token,
        None,
    );
    assert_eq!(activity["items"][0]["cause"]["type"], "webhook");
    assert_eq!(
        activity["items"][0]["cause"]["webhook_id"],
        hook.id.as_str()
    );
}

#[test]
fn a_replay_is_refused_whether_identical_or_with_a_new_timestamp() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "msg_1", now, BODY));
    assert_error(
        &server.send_hook(&hook, &hook.secret, "msg_1", now, BODY),
        409,
        "replayed",
    );
    server.clock.advance_secs(10);
    let later = server.now_secs();
    assert_error(
        &server.send_hook(&hook, &hook.secret, "msg_1", later, BODY),
        409,
        "replayed",
    );
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);
}

#[test]
fn thirty_two_concurrent_copies_of_one_request_are_accepted_once() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let signature = flotilla::signature::sign(&key, "msg_race", now, BODY);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let (server, hook, signature) = (&server, &hook, &signature);
                scope.spawn(move || {
                    server
                        .send_raw(hook, "msg_race", &now.to_string(), signature, BODY.to_vec())
                        .0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        31,
        "{statuses:?}"
    );
    assert_eq!(server.capacity(&hook.token, &hook.group), 1);
}

#[test]
fn timestamps_are_accepted_exactly_within_the_tolerance() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    assert_error(
        &server.send_hook(&hook, &hook.secret, "old", now - 301, BODY),
        401,
        "timestamp_out_of_window",
    );
    assert_error(
        &server.send_hook(&hook, &hook.secret, "new", now + 301, BODY),
        401,
        "timestamp_out_of_window",
    );
    accepted(&server.send_hook(&hook, &hook.secret, "edge-old", now - 300, BODY));
    accepted(&server.send_hook(&hook, &hook.secret, "edge-new", now + 300, BODY));
    // An out-of-window call recorded nothing: the same nonce passes once in window.
    accepted(&server.send_hook(&hook, &hook.secret, "old", now, BODY));
}

#[test]
fn malformed_timestamps_are_400() {
    let server = Server::start();
    let hook = server.webhook_setup();
    for timestamp in [
        "1.5",
        "1e9",
        "+1",
        "",
        "99999999999999999999",
        "-5",
        "12abc",
    ] {
        let key = flotilla::signature::key_of(&hook.secret).unwrap();
        // Signed over the malformed text itself, so only the format is at fault.
        let mut mac_input = format!("msg_ts.{timestamp}.").into_bytes();
        mac_input.extend_from_slice(BODY);
        let signature = flotilla::signature::sign_body(&key, &mac_input);
        let answer = server.send_raw(&hook, "msg_ts", timestamp, &signature, BODY.to_vec());
        assert_error(&answer, 400, "invalid_timestamp");
    }
}

#[test]
fn any_change_to_the_signed_bytes_is_401_and_records_nothing() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let signature = flotilla::signature::sign(&key, "msg_t", now, BODY);
    let ts = now.to_string();
    let variants: Vec<Vec<u8>> = vec![
        br#"{"alarm":"cpu-high","value":0.94}"#.to_vec(),
        BODY[..BODY.len() - 1].to_vec(),
        br#"{"alarm": "cpu-high", "value": 0.93}"#.to_vec(),
        [BODY, b"\n"].concat(),
        br#"{"value":0.93,"alarm":"cpu-high"}"#.to_vec(),
    ];
    for body in variants {
        let answer = server.send_raw(&hook, "msg_t", &ts, &signature, body);
        assert_error(&answer, 401, "invalid_signature");
    }
    let other = flotilla::signature::sign(&[9u8; 32], "msg_t", now, BODY);
    for bad in [
        other.as_str(),
        "",
        "v1,",
        "v1,***not-base64***",
        "v2,abc",
        "garbage",
    ] {
        assert_error(
            &server.send_raw(&hook, "msg_t", &ts, bad, BODY.to_vec()),
            401,
            "invalid_signature",
        );
    }
    // None of those recorded the nonce: the genuine request still passes.
    accepted(&server.send_raw(&hook, "msg_t", &ts, &signature, BODY.to_vec()));
}

#[test]
fn decoys_beside_a_valid_signature_do_not_hide_it() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let good = flotilla::signature::sign(&key, "msg_d", now, BODY);
    let header = format!("v1,AAAA v1a,whatever {good} v1,bm90IGl0");
    accepted(&server.send_raw(&hook, "msg_d", &now.to_string(), &header, BODY.to_vec()));
}

#[test]
fn a_body_over_64_kib_is_413() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let big = vec![b' '; 64 * 1024 + 1];
    let answer = server.send_hook(&hook, &hook.secret, "msg_big", now, &big);
    assert_error(&answer, 413, "too_large");
    let fits = [br#"{"a":1}"#.as_slice(), &vec![b' '; 64 * 1024 - 7]].concat();
    accepted(&server.send_hook(&hook, &hook.secret, "msg_fits", now, &fits));
}

#[test]
fn unknown_and_revoked_webhooks_are_404() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let unknown = Hook {
        url: server.url("/v1/hooks/whk_doesnotexist"),
        ..hook.clone()
    };
    assert_error(
        &server.send_hook(&unknown, &hook.secret, "n1", now, BODY),
        404,
        "not_found",
    );
    let path = format!(
        "/v1/groups/{}/policies/{}/webhooks/{}",
        hook.group, hook.policy, hook.id
    );
    assert_eq!(server.call("DELETE", &path, &hook.token, None).0, 204);
    assert_error(
        &server.send_hook(&hook, &hook.secret, "n2", now, BODY),
        404,
        "not_found",
    );
    assert_error(
        &server.call("GET", &path, &hook.token, None),
        404,
        "not_found",
    );
}

#[test]
fn after_a_rotation_the_old_secret_works_for_the_grace_and_not_a_moment_longer() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let path = format!(
        "/v1/groups/{}/policies/{}/webhooks/{}/rotate",
        hook.group, hook.policy, hook.id
    );
    let (status, rotated) = server.call(
        "POST",
        &path,
        &hook.token,
        Some(json!({"grace_seconds": 60})),
    );
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, hook.secret);
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "old-1", now, BODY));
    accepted(&server.send_hook(&hook, &new_secret, "new-1", now, BODY));
    server.clock.advance_secs(59);
    accepted(&server.send_hook(&hook, &hook.secret, "old-2", server.now_secs(), BODY));
    server.clock.advance_secs(1);
    let now = server.now_secs();
    assert_error(
        &server.send_hook(&hook, &hook.secret, "old-3", now, BODY),
        401,
        "invalid_signature",
    );
    accepted(&server.send_hook(&hook, &new_secret, "new-2", now, BODY));
    // A rotation with no body takes the default grace of a day.
    let (status, _) = server.call("POST", &path, &hook.token, None);
    assert_eq!(status, 200);
    let bad = server.call("POST", &path, &hook.token, Some(json!({"grace": 5})));
    assert_error(&bad, 400, "invalid_json");
}

#[test]
fn rotating_twice_within_the_grace_keeps_both_old_secrets_working() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let path = format!(
        "/v1/groups/{}/policies/{}/webhooks/{}/rotate",
        hook.group, hook.policy, hook.id
    );
    let rotate = || {
        let (status, rotated) = server.call(
            "POST",
            &path,
            &hook.token,
            Some(json!({"grace_seconds": 60})),
        );
        assert_eq!(status, 200, "{rotated}");
        rotated["secret"].as_str().unwrap().to_owned()
    };
    let second = rotate();
    server.clock.advance_secs(10);
    let third = rotate();
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "first", now, BODY));
    accepted(&server.send_hook(&hook, &second, "second", now, BODY));
    accepted(&server.send_hook(&hook, &third, "third", now, BODY));
    // Each ends at its own grace: the first 60 s after the first rotation.
    server.clock.advance_secs(50);
    let now = server.now_secs();
    let ended = server.send_hook(&hook, &hook.secret, "first-late", now, BODY);
    assert_error(&ended, 401, "invalid_signature");
    accepted(&server.send_hook(&hook, &second, "second-late", now, BODY));
}

#[test]
fn rate_limits_per_webhook_answer_429_with_retry_after_until_refilled() {
    let server = Server::start_with(|s| s.webhook_rate_limit = 2);
    let hook = server.webhook_setup();
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "r1", now, BODY));
    accepted(&server.send_hook(&hook, &hook.secret, "r2", now, BODY));
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let response = server
        .client
        .post(&hook.url)
        .header("webhook-id", "r3")
        .header("webhook-timestamp", now.to_string())
        .header(
            "webhook-signature",
            flotilla::signature::sign(&key, "r3", now, BODY),
        )
        .body(BODY.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_error(&common::read(response), 429, "rate_limited");
    server.clock.advance_secs(1);
    accepted(&server.send_hook(&hook, &hook.secret, "r3", server.now_secs(), BODY));
}

#[test]
fn neither_forged_nor_replayed_calls_spend_the_signed_callers_rate_limit() {
    let server = Server::start_with(|s| s.webhook_rate_limit = 2);
    let hook = server.webhook_setup();
    let now = server.now_secs();
    // Anyone who knows the URL: a flood of calls with a wrong signature, all 401.
    for n in 0..20 {
        let forged = server.send_raw(
            &hook,
            &format!("forged{n}"),
            &now.to_string(),
            "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
            BODY.to_vec(),
        );
        assert_error(&forged, 401, "invalid_signature");
    }
    // The signed caller still has its whole bucket, and only then is limited; replays of a
    // captured call (409) spend none of it either.
    accepted(&server.send_hook(&hook, &hook.secret, "s1", now, BODY));
    for _ in 0..10 {
        let replayed = server.send_hook(&hook, &hook.secret, "s1", now, BODY);
        assert_error(&replayed, 409, "replayed");
    }
    accepted(&server.send_hook(&hook, &hook.secret, "s2", now, BODY));
    let limited = server.send_hook(&hook, &hook.secret, "s3", now, BODY);
    assert_error(&limited, 429, "rate_limited");
    // The refused call's nonce was not recorded: it goes through once the bucket refills.
    server.clock.advance_secs(1);
    accepted(&server.send_hook(&hook, &hook.secret, "s3", server.now_secs(), BODY));
}

#[test]
fn rate_limits_per_source_address_cover_every_webhook() {
    let server = Server::start_with(|s| s.source_rate_limit = 1);
    let hook = server.webhook_setup();
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "s1", now, BODY));
    let unknown = Hook {
        url: server.url("/v1/hooks/whk_other"),
        ..hook.clone()
    };
    assert_error(
        &server.send_hook(&unknown, &hook.secret, "s2", now, BODY),
        429,
        "rate_limited",
    );
}

#[test]
fn the_body_form_carries_nonce_and_timestamp_under_the_signature() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let body = format!(
        r#"{{"nonce":"b-1","timestamp":{},"reason":"cpu"}}"#,
        server.now_secs()
    );
    let post = |body: &str, signature: &str| {
        let response = server
            .client
            .post(&hook.url)
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .unwrap();
        common::read(response)
    };
    let signature = flotilla::signature::sign_body(&key, body.as_bytes());
    accepted(&post(&body, &signature));
    assert_error(&post(&body, &signature), 409, "replayed");
    let no_nonce = format!(r#"{{"timestamp":{}}}"#, server.now_secs());
    assert_error(
        &post(
            &no_nonce,
            &flotilla::signature::sign_body(&key, no_nonce.as_bytes()),
        ),
        400,
        "missing_nonce",
    );
    assert_error(&post(&body, "v1,AAAA"), 401, "invalid_signature");
}

#[test]
fn a_full_nonce_window_refuses_with_429_and_never_forgets_early() {
    let server = Server::start_with(|s| s.webhook_nonce_window = 2);
    let hook = server.webhook_setup();
    let now = server.now_secs();
    accepted(&server.send_hook(&hook, &hook.secret, "w1", now, BODY));
    server.clock.advance_secs(100);
    accepted(&server.send_hook(&hook, &hook.secret, "w2", server.now_secs(), BODY));
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    let t = server.now_secs();
    let response = server
        .client
        .post(&hook.url)
        .header("webhook-id", "w3")
        .header("webhook-timestamp", t.to_string())
        .header(
            "webhook-signature",
            flotilla::signature::sign(&key, "w3", t, BODY),
        )
        .body(BODY.to_vec())
        .send()
        .unwrap();
    assert_eq!(response.status(), 429);
    // w1 is remembered until its timestamp + 300 s, 200 s from now.
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((200..=201).contains(&retry), "{retry}");
    assert_error(&common::read(response), 429, "nonce_window_full");
    // The replay of w1 is still refused as a replay, not forgotten to make room.
    assert_error(
        &server.send_hook(&hook, &hook.secret, "w1", now, BODY),
        409,
        "replayed",
    );
    server.clock.advance_secs(201);
    accepted(&server.send_hook(&hook, &hook.secret, "w3", server.now_secs(), BODY));
}

#[test]
fn a_webhook_whose_policy_was_deleted_is_404_and_records_nothing() {
    let server = Server::start();
    let hook = server.webhook_setup();
    let policy = format!("/v1/groups/{}/policies/{}", hook.group, hook.policy);
    assert_eq!(server.call("DELETE", &policy, &hook.token, None).0, 204);
    let now = server.now_secs();
    assert_error(
        &server.send_hook(&hook, &hook.secret, "after-delete", now, BODY),
        404,
        "not_found",
    );
    let journal = server.journal_export();
    assert!(journal.contains("nonce_accepted") || journal.contains("\"type\":\"created\""));
    assert!(!journal.contains("after-delete"), "the nonce was recorded");
}

#[test]
fn a_bad_signature_flood_from_one_address_never_stops_signed_calls_from_another() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let server = Server::start();
    let hook = server.webhook_setup();
    let now = server.now_secs();
    let addr = server.base.trim_start_matches("http://").to_owned();
    let path = hook.url.split(&addr).nth(1).unwrap().to_owned();

    // The flood: 20,000 calls with a bad signature from 127.0.0.1, over 4 kept-alive connections.
    let refused = std::sync::Arc::new(AtomicUsize::new(0));
    let flood: Vec<_> = (0..4)
        .map(|c| {
            let (addr, path, refused) = (addr.clone(), path.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut stream = std::net::TcpStream::connect(&addr).unwrap();
                let mut answer = [0u8; 4096];
                for n in 0..5_000 {
                    let request = format!(
                        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nwebhook-id: flood-{c}-{n}\r\n\
                         webhook-timestamp: {now}\r\nwebhook-signature: v1,AAAA\r\n\
                         content-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"
                    );
                    // The server may close a connection after a refusal: a new one, and again.
                    let head = loop {
                        let sent = stream.write_all(request.as_bytes());
                        let read = sent.and_then(|()| stream.read(&mut answer));
                        match read {
                            Ok(read) if read > 0 => {
                                break String::from_utf8_lossy(&answer[..read]).into_owned()
                            }
                            _ => stream = std::net::TcpStream::connect(&addr).unwrap(),
                        }
                    };
                    if head.starts_with("HTTP/1.1 401") || head.starts_with("HTTP/1.1 429") {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Meanwhile, the signed caller, from 127.0.0.2: every call accepted.
    let client = reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let key = flotilla::signature::key_of(&hook.secret).unwrap();
    for n in 0..40 {
        let nonce = format!("signed-{n}");
        let signature = flotilla::signature::sign(&key, &nonce, now, BODY);
        let response = client
            .post(&hook.url)
            .header("webhook-id", &nonce)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .header("content-type", "application/json")
            .body(BODY.to_vec())
            .send()
            .unwrap();
        accepted(&common::read(response));
    }
    for thread in flood {
        thread.join().unwrap();
    }
    assert_eq!(
        refused.load(Ordering::Relaxed),
        20_000,
        "every forged call refused"
    );
}
