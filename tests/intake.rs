//! The HTTP server's edge (SPEC 3) against raw sockets: a body that does not arrive in time gets
//! 408, one declared too large gets 413 before it is read, and a source over its connection
//! limit gets 429, until one of its connections closes.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::Value;

fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.base.trim_start_matches("http://")).unwrap();
    // A guard for a broken service; every answer below comes well before it.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// An answer: status, lowercase header lines, and the body as JSON (null if empty).
struct Answer {
    status: u16,
    headers: Vec<String>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let prefix = format!("{name}: ");
        self.headers
            .iter()
            .find_map(|h| h.strip_prefix(prefix.as_str()))
    }
}

/// Reads one answer from `stream`.
fn answer(stream: &TcpStream) -> Answer {
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end().to_ascii_lowercase();
        if line.is_empty() {
            break;
        }
        headers.push(line);
    }
    let length: usize = headers
        .iter()
        .find_map(|h| h.strip_prefix("content-length: "))
        .map_or(0, |n| n.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

/// Whether the server closed `stream` (a read sees its end).
fn closed(mut stream: &TcpStream) -> bool {
    let mut byte = [0];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

fn get_healthz(mut stream: &TcpStream) -> Answer {
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: flotilla\r\n\r\n")
        .unwrap();
    answer(stream)
}

#[test]
fn a_body_that_does_not_arrive_in_time_gets_408_and_its_connection_closed() {
    let server = Server::start_with(|s| s.body_timeout_ms = 300);
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /v1/metrics HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{",
        )
        .unwrap();
    let late = answer(&stream);
    assert_eq!(late.status, 408, "{:?}", late.headers);
    assert_eq!(
        late.body["error"]["code"], "request_timeout",
        "{}",
        late.body
    );
    assert_eq!(late.header("connection"), Some("close"));
    assert!(closed(&stream));

    // A body that arrives in time is read whole, in pieces or not.
    let mut stream = connect(&server);
    stream
        .write_all(b"POST /v1/metrics HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{")
        .unwrap();
    stream.write_all(b"}").unwrap();
    let unauthenticated = answer(&stream);
    assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.body);
}

#[test]
fn a_body_already_in_with_its_head_is_read_whole_chunked_or_not() {
    let server = Server::start_with(|s| s.body_timeout_ms = 300);
    // Head and body in one write, plain or chunked: the body is read to its end.
    for request in [
        &b"POST /v1/metrics HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\n\
           Content-Length: 2\r\n\r\n{}"[..],
        &b"POST /v1/metrics HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\n\
           Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n1\r\n}\r\n0\r\n\r\n"[..],
    ] {
        let mut stream = connect(&server);
        stream.write_all(request).unwrap();
        let unauthenticated = answer(&stream);
        assert_eq!(unauthenticated.status, 401, "{}", unauthenticated.body);
        // The connection is kept: the body was read to its end.
        assert_eq!(get_healthz(&stream).status, 200);
    }
    // Its first piece in with the head, the rest late: the deadline holds for the rest.
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /v1/metrics HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n1\r\n{\r\n",
        )
        .unwrap();
    let late = answer(&stream);
    assert_eq!(late.status, 408, "{:?}", late.headers);
    assert!(closed(&stream));
}

#[test]
fn a_body_declared_over_the_limit_is_refused_before_it_is_read() {
    let server = Server::start();
    let mut stream = connect(&server);
    stream
        .write_all(
            b"POST /v1/groups HTTP/1.1\r\nHost: flotilla\r\nContent-Type: application/json\r\n\
              Content-Length: 104857600\r\n\r\n{",
        )
        .unwrap();
    let refused = answer(&stream);
    assert_eq!(refused.status, 413);
    assert_eq!(
        refused.body["error"]["code"], "too_large",
        "{}",
        refused.body
    );
    assert!(closed(&stream));
}

#[test]
fn a_source_over_its_connection_limit_gets_429_until_one_closes() {
    let server = Server::start_with(|s| s.max_connections_per_source = 3);
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect(&server)).collect();
    for stream in &held {
        assert_eq!(get_healthz(stream).status, 200);
    }
    let extra = connect(&server);
    let refused = get_healthz(&extra);
    assert_eq!(refused.status, 429);
    assert_eq!(
        refused.body["error"]["code"], "too_many_connections",
        "{}",
        refused.body
    );
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(closed(&extra));

    // Once one of the three closes (which the server learns of asynchronously), a new
    // connection is served.
    drop(held.remove(0));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get_healthz(&connect(&server));
        if answer.status == 200 {
            break;
        }
        assert_eq!(answer.status, 429);
        assert!(
            Instant::now() < deadline,
            "a closed connection still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
