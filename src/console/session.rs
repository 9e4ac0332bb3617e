//! The console's sign-in sessions: a tenant's token is asked for once, checked, and never kept
//! in the browser. The browser holds a random session id in an HttpOnly, SameSite=Strict
//! cookie; this node keeps, under the id's hash, the tenant, the hash of the token it signed in
//! with (so that a new token for the tenant ends its sessions at once), a token against
//! cross-site requests, and an expiry on the service clock.

use std::collections::HashMap;
use std::sync::Mutex;

use flotilla_actors::clock::Timestamp;
use flotilla_actors::domain::TenantId;

use crate::token;

/// The cookie the session id travels in.
pub const COOKIE: &str = "flotilla_console";

/// How long a session lasts after sign-in.
pub const TTL_SECONDS: u64 = 8 * 3600;

/// The most sessions one node keeps; past it, expired ones go first, then the oldest.
const MAX_SESSIONS: usize = 10_000;

/// The most sessions of one tenant; past it, its oldest goes, so no tenant can push the
/// others' sessions out.
const MAX_PER_TENANT: usize = 32;

/// A signed-in browser.
#[derive(Clone, Debug)]
pub struct Session {
    /// The tenant it acts as.
    pub tenant: TenantId,
    /// sha256 of the token it signed in with.
    pub token_hash: String,
    /// The token every form it posts must carry.
    pub csrf: String,
    /// When it ends.
    pub expires_at: Timestamp,
    /// A message for its next page (an action's outcome), shown once.
    pub flash: Option<Flash>,
}

/// An action's outcome, shown once on the next page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports a refusal.
    pub error: bool,
    /// What to say.
    pub text: String,
}

/// The sessions of this node (in memory: a restart signs everyone out).
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `tenant`, signed in with the token of hash `token_hash` at `now`:
    /// the cookie's value.
    pub fn start(&self, tenant: TenantId, token_hash: String, now: Timestamp) -> String {
        let id = token::generate("flo_cs_");
        let session = Session {
            tenant,
            token_hash,
            csrf: token::generate("flo_csrf_"),
            expires_at: now.plus_secs(TTL_SECONDS),
            flash: None,
        };
        let mut sessions = self.lock();
        let oldest_of = |sessions: &HashMap<String, Session>, tenant: Option<&TenantId>| {
            sessions
                .iter()
                .filter(|(_, s)| tenant.is_none_or(|t| &s.tenant == t))
                .min_by_key(|(_, s)| s.expires_at)
                .map(|(k, _)| k.clone())
        };
        let theirs = sessions
            .values()
            .filter(|s| s.tenant == session.tenant)
            .count();
        if theirs >= MAX_PER_TENANT {
            if let Some(oldest) = oldest_of(&sessions, Some(&session.tenant)) {
                sessions.remove(&oldest);
            }
        }
        if sessions.len() >= MAX_SESSIONS {
            sessions.retain(|_, s| s.expires_at > now);
        }
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = oldest_of(&sessions, None) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(token::hash(&id), session);
        id
    }

    /// The live session of cookie value `id` at `now`; an expired one is forgotten.
    pub fn get(&self, id: &str, now: Timestamp) -> Option<Session> {
        let key = token::hash(id);
        let mut sessions = self.lock();
        match sessions.get(&key) {
            Some(session) if session.expires_at > now => Some(session.clone()),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session of cookie value `id`.
    pub fn end(&self, id: &str) {
        self.lock().remove(&token::hash(id));
    }

    /// Leaves `flash` for the session's next page.
    pub fn flash(&self, id: &str, flash: Flash) {
        if let Some(session) = self.lock().get_mut(&token::hash(id)) {
            session.flash = Some(flash);
        }
    }

    /// Takes the session's message, if one was left.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock()
            .get_mut(&token::hash(id))
            .and_then(|session| session.flash.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_secs(1_795_000_000);

    #[test]
    fn a_session_lasts_its_ttl_on_the_service_clock_and_ends_when_signed_out() {
        let sessions = Sessions::default();
        let id = sessions.start(TenantId::new("ten_1"), "hash".into(), T0);
        assert!(id.starts_with("flo_cs_"));
        let session = sessions.get(&id, T0).unwrap();
        assert_eq!(session.tenant.as_str(), "ten_1");
        assert!(session.csrf.starts_with("flo_csrf_"));
        assert!(sessions.get(&id, T0.plus_secs(TTL_SECONDS - 1)).is_some());
        assert!(sessions.get(&id, T0.plus_secs(TTL_SECONDS)).is_none());
        // Gone for good once expired, even if asked at an earlier instant.
        assert!(sessions.get(&id, T0).is_none());
        let again = sessions.start(TenantId::new("ten_1"), "hash".into(), T0);
        sessions.end(&again);
        assert!(sessions.get(&again, T0).is_none());
        assert!(sessions.get("flo_cs_made_up", T0).is_none());
    }

    #[test]
    fn a_tenant_signing_in_again_and_again_pushes_out_only_its_own_oldest_sessions() {
        let sessions = Sessions::default();
        let other = sessions.start(TenantId::new("ten_other"), "h".into(), T0);
        let first = sessions.start(TenantId::new("ten_1"), "hash".into(), T0);
        for i in 1..=MAX_PER_TENANT as u64 {
            sessions.start(TenantId::new("ten_1"), "hash".into(), T0.plus_secs(i));
        }
        assert!(sessions.get(&first, T0).is_none(), "its oldest went");
        assert!(
            sessions.get(&other, T0).is_some(),
            "the other tenant's stays"
        );
        let ours = sessions
            .lock()
            .values()
            .filter(|s| s.tenant.as_str() == "ten_1")
            .count();
        assert_eq!(ours, MAX_PER_TENANT);
    }

    #[test]
    fn a_flash_is_shown_once() {
        let sessions = Sessions::default();
        let id = sessions.start(TenantId::new("ten_1"), "hash".into(), T0);
        let flash = Flash {
            error: false,
            text: "Paused scale-in.".into(),
        };
        sessions.flash(&id, flash.clone());
        assert_eq!(sessions.take_flash(&id), Some(flash));
        assert_eq!(sessions.take_flash(&id), None);
    }
}
