//! A stand-in for a cloud orchestrator behind the `http` provider, which cannot run here: it
//! answers a create with an id of its own and anything else with a running status, and keeps
//! what each create carried. It can hold its answer to the first creates until the test lets
//! them go, to catch a node with a launch under way.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::{json, Value};

/// What one create carried, and the id it was answered with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Create {
    /// The `flotilla-lease` header.
    pub lease: String,
    /// The `flotilla-fencing-token` header.
    pub token: String,
    /// The server the create was for.
    pub server_id: String,
    /// The id this orchestrator gave it (`vm-1`, `vm-2`, ... in order of arrival).
    pub handle: String,
}

#[derive(Default)]
struct Shared {
    creates: Vec<Create>,
    /// Creates still to hold, from the next one on.
    hold: usize,
    /// Set once held creates may be answered.
    released: bool,
}

/// The orchestrator, on a loopback port; it serves until the test process ends.
#[derive(Clone)]
pub struct Orchestrator {
    /// Its URL, for a launch configuration.
    pub url: String,
    shared: Arc<(Mutex<Shared>, Condvar)>,
}

impl Orchestrator {
    /// Answers every request at once.
    pub fn start() -> Orchestrator {
        Orchestrator::holding(0)
    }

    /// Holds its answers to the first `creates` creates until [`Orchestrator::release`].
    pub fn holding(creates: usize) -> Orchestrator {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let orchestrator = Orchestrator {
            url: format!("http://{}/servers", listener.local_addr().unwrap()),
            shared: Arc::new((
                Mutex::new(Shared {
                    hold: creates,
                    ..Shared::default()
                }),
                Condvar::new(),
            )),
        };
        let serving = orchestrator.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let serving = serving.clone();
                std::thread::spawn(move || serving.answer(stream));
            }
        });
        orchestrator
    }

    /// Every create received so far, in order of arrival.
    pub fn creates(&self) -> Vec<Create> {
        self.lock().creates.clone()
    }

    /// Lets the held creates be answered.
    pub fn release(&self) {
        self.lock().released = true;
        self.shared.1.notify_all();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.0.lock().unwrap()
    }

    fn answer(&self, mut stream: std::net::TcpStream) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut headers = HashMap::new();
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        loop {
            line.clear();
            if reader.read_line(&mut line).is_err() {
                return;
            }
            let Some((name, value)) = line.trim().split_once(':') else {
                break;
            };
            headers.insert(name.trim().to_lowercase(), value.trim().to_owned());
        }
        let length = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let answer = if request["action"] == "create" {
            let mut shared = self.lock();
            let handle = format!("vm-{}", shared.creates.len() + 1);
            shared.creates.push(Create {
                lease: headers.get("flotilla-lease").cloned().unwrap_or_default(),
                token: headers
                    .get("flotilla-fencing-token")
                    .cloned()
                    .unwrap_or_default(),
                server_id: request["server_id"].as_str().unwrap_or_default().to_owned(),
                handle: handle.clone(),
            });
            if shared.hold > 0 {
                shared.hold -= 1;
                let _released = self
                    .shared
                    .1
                    .wait_while(shared, |shared| !shared.released)
                    .unwrap();
            }
            json!({"id": handle})
        } else {
            json!({"status": "running"})
        };
        let answer = answer.to_string();
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{answer}",
            answer.len()
        );
    }
}
