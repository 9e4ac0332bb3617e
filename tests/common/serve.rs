//! The real service started in this process, on a thread of its own with its own actix system,
//! stopped when dropped: the start-up the end-to-end tests (`common::Server`) and the load
//! harness (`benches/load/`) share.

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use flotilla::service::Readiness;
use flotilla::settings::Settings;
use flotilla::ticks::Ticks;
use flotilla_actors::clock::Clock;

/// A service running on its own thread.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its operator token.
    pub operator_token: String,
    /// Set once its journal is replayed.
    pub ready: Arc<Readiness>,
    handle: Option<actix_web::dev::ServerHandle>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts the service on `settings`, `clock` and `ticks`; answers once it listens (it may
    /// still be replaying its journal: see [`Running::wait_ready`]).
    pub fn start(settings: Settings, clock: Arc<dyn Clock>, ticks: Ticks) -> Running {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix_web::rt::System::new();
            system.block_on(async move {
                let service = flotilla::service::start_with(settings, clock, ticks).unwrap();
                let handle = service.server.handle();
                tx.send((
                    service.addr,
                    service.operator_token.clone(),
                    service.ready,
                    handle,
                ))
                .unwrap();
                service.server.await.unwrap();
            });
        });
        let (addr, operator_token, ready, handle) = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the service did not start");
        Running {
            addr,
            operator_token,
            ready,
            handle: Some(handle),
            thread: Some(thread),
        }
    }

    /// Waits until the service is ready (its journal replayed); panics after `timeout`.
    pub fn wait_ready(&self, timeout: Duration) {
        assert!(
            self.ready.wait(timeout),
            "the service was not ready after {timeout:?}"
        );
    }

    /// Stops the server and waits for its thread (and so its journal) to end.
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            drop(handle.stop(false));
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
