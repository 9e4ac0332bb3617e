//! `simulated`: servers that exist only in their handles, for demos and benchmarks.
//!
//! Launch configuration: `{"provider": "simulated", "start_seconds": 0, "failure_rate": 0.0,
//! "seed": 0}`. A launch fails with probability `failure_rate` (drawn from a hash of the seed,
//! the server id and the clock's now, so a run on a manual clock repeats exactly); a launched
//! server runs once `start_seconds` of the injected clock have passed. The handle holds all
//! there is to know (`{"simulated": id, "ready_at": ms}`), so a restart loses nothing.

use std::sync::Arc;

use flotilla_actors::clock::Clock;
use serde_json::{json, Value};

use super::{Launch, Provider, ProviderError, Status};

/// The simulated provider.
pub struct SimulatedProvider {
    clock: Arc<dyn Clock>,
}

impl SimulatedProvider {
    /// Simulates on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> SimulatedProvider {
        SimulatedProvider { clock }
    }
}

/// splitmix64 over FNV-1a of the inputs: a uniform draw in [0, 1).
fn draw(seed: u64, server_id: &str, now: i64) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in server_id.bytes() {
        h = (h ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let mut z = h ^ seed ^ (now as u64).rotate_left(17);
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

impl Provider for SimulatedProvider {
    fn launch(&self, launch: &Launch) -> Result<Value, ProviderError> {
        let config = &launch.config;
        let now = self.clock.now().as_millis();
        let failure_rate = config["failure_rate"].as_f64().unwrap_or(0.0);
        let seed = config["seed"].as_u64().unwrap_or(0);
        if draw(seed, &launch.server_id, now) < failure_rate {
            return Err(ProviderError::new(format!(
                "simulated launch failure (failure_rate {failure_rate})"
            )));
        }
        let start_ms = (config["start_seconds"].as_f64().unwrap_or(0.0) * 1000.0).max(0.0);
        Ok(json!({"simulated": launch.server_id, "ready_at": now + start_ms as i64}))
    }

    fn delete(&self, _config: &Value, _handle: &Value) -> Result<(), ProviderError> {
        Ok(())
    }

    fn status(&self, _config: &Value, handle: &Value) -> Status {
        match handle["ready_at"].as_i64() {
            Some(ready_at) if ready_at <= self.clock.now().as_millis() => Status::Running,
            Some(_) => Status::Unknown,
            None => Status::Exited,
        }
    }

    fn blocks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_uniform_enough_and_repeatable() {
        let draws: Vec<f64> = (0..10_000)
            .map(|i| draw(7, &format!("srv_{i}"), 1))
            .collect();
        let below = draws.iter().filter(|d| **d < 0.25).count();
        assert!((2_200..2_800).contains(&below), "{below}");
        assert_eq!(draw(7, "srv_1", 1), draw(7, "srv_1", 1));
    }
}
