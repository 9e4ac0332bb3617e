//! Standard Webhooks v1 signatures (SPEC section 4): parsing the headers, checking a signature
//! in constant time, and signing (for `flotilla webhook sign` and tests).
//!
//! Header form: `webhook-id`, `webhook-timestamp`, and `webhook-signature` holding one or more
//! space-separated `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
//! Body form (no id or timestamp header): the signature is over the raw body, which carries
//! top-level `"nonce"` and `"timestamp"`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use flotilla_actors::clock::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Most signatures one header may carry (each costs an HMAC comparison).
pub const MAX_SIGNATURES: usize = 16;

/// Why a call is refused before (or by) its signature check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 400: a header or the body is malformed. `code` names what.
    Malformed {
        /// Stable snake_case code.
        code: &'static str,
        /// Human text.
        message: String,
    },
    /// 401 `invalid_signature`.
    InvalidSignature,
}

fn malformed(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Malformed {
        code,
        message: message.into(),
    }
}

/// A call as received: its headers, parsed, and which form it takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// The candidate signatures (decoded `v1` entries).
    signatures: Vec<Vec<u8>>,
    form: Form,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Form {
    /// Nonce and timestamp in headers; the timestamp's text is part of the signed content.
    Headers {
        nonce: String,
        timestamp_text: String,
        timestamp: Timestamp,
    },
    /// Nonce and timestamp in the body.
    Body,
}

impl Call {
    /// Parses the three headers (`None` when absent). Nothing here is trusted yet.
    pub fn parse(
        id: Option<&str>,
        timestamp: Option<&str>,
        signature: Option<&str>,
    ) -> Result<Call, Refusal> {
        let signatures = parse_signatures(signature.unwrap_or(""))?;
        let form = match (id, timestamp) {
            (None, None) => Form::Body,
            (Some(id), Some(timestamp_text)) => Form::Headers {
                nonce: id.to_owned(),
                timestamp: parse_timestamp(timestamp_text)?,
                timestamp_text: timestamp_text.to_owned(),
            },
            _ => {
                return Err(malformed(
                    "missing_header",
                    "webhook-id and webhook-timestamp go together",
                ))
            }
        };
        Ok(Call { signatures, form })
    }

    /// Checks the signature over `body` with each of `secrets`; if one signed it, reads the nonce
    /// and timestamp (from the headers, or from the now-trusted body).
    pub fn verify<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k [u8]>,
        body: &[u8],
    ) -> Result<(String, Timestamp), Refusal> {
        let signed = keys.into_iter().any(|key| {
            let mac = self.mac(key, body);
            // `verify_slice` compares in constant time.
            self.signatures
                .iter()
                .any(|candidate| mac.clone().verify_slice(candidate).is_ok())
        });
        if !signed {
            return Err(Refusal::InvalidSignature);
        }
        match &self.form {
            Form::Headers {
                nonce, timestamp, ..
            } => Ok((nonce.clone(), *timestamp)),
            Form::Body => nonce_and_timestamp_of(body),
        }
    }

    fn mac(&self, key: &[u8], body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        if let Form::Headers {
            nonce,
            timestamp_text,
            ..
        } = &self.form
        {
            mac.update(nonce.as_bytes());
            mac.update(b".");
            mac.update(timestamp_text.as_bytes());
            mac.update(b".");
        }
        mac.update(body);
        mac
    }
}

fn parse_signatures(header: &str) -> Result<Vec<Vec<u8>>, Refusal> {
    let mut signatures = Vec::new();
    for entry in header.split(' ').filter(|e| !e.is_empty()) {
        if signatures.len() == MAX_SIGNATURES {
            break;
        }
        // Other versions (v1a, ...) are not ours to check; skip them.
        let Some(encoded) = entry.strip_prefix("v1,") else {
            continue;
        };
        if let Ok(bytes) = STANDARD.decode(encoded) {
            signatures.push(bytes);
        }
    }
    if signatures.is_empty() {
        return Err(Refusal::InvalidSignature);
    }
    Ok(signatures)
}

/// Unix seconds as plain ASCII digits (no sign, fraction, exponent or spaces), at most 12 of
/// them.
fn parse_timestamp(text: &str) -> Result<Timestamp, Refusal> {
    let digits = !text.is_empty() && text.len() <= 12 && text.bytes().all(|b| b.is_ascii_digit());
    let seconds = digits
        .then(|| text.parse::<i64>().ok())
        .flatten()
        .ok_or_else(|| {
            malformed(
                "invalid_timestamp",
                "webhook-timestamp must be Unix seconds, as digits",
            )
        })?;
    Ok(Timestamp::from_secs(seconds))
}

fn nonce_and_timestamp_of(body: &[u8]) -> Result<(String, Timestamp), Refusal> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| malformed("invalid_json", format!("the body is not JSON: {e}")))?;
    let nonce = value
        .get("nonce")
        .and_then(|n| n.as_str())
        .ok_or_else(|| malformed("missing_nonce", "the body must carry a string \"nonce\""))?;
    let seconds = value
        .get("timestamp")
        .and_then(serde_json::Value::as_i64)
        .filter(|t| (0..=999_999_999_999).contains(t))
        .ok_or_else(|| {
            malformed(
                "invalid_timestamp",
                "the body must carry \"timestamp\" as integer Unix seconds",
            )
        })?;
    Ok((nonce.to_owned(), Timestamp::from_secs(seconds)))
}

/// `v1,<base64>` for the header form.
pub fn sign(key: &[u8], nonce: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{nonce}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// `v1,<base64>` for the body form (the signature covers the raw body alone).
pub fn sign_body(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The key bytes of a `whsec_<base64>` secret of any length (the standard's test vectors use 24
/// bytes; Flotilla's own secrets are 32).
pub fn key_of(secret: &str) -> Option<Vec<u8>> {
    STANDARD.decode(secret.strip_prefix("whsec_")?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_headers_and_body_give_a_call_or_a_refusal_never_a_panic(
            id in proptest::option::of(".{0,200}"),
            timestamp in proptest::option::of(".{0,30}"),
            signature in proptest::option::of(".{0,300}"),
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            if let Ok(call) = Call::parse(id.as_deref(), timestamp.as_deref(), signature.as_deref()) {
                let key = key_of(SECRET).unwrap();
                let _ = call.verify([key.as_slice()], &body);
            }
        }

        #[test]
        fn the_body_form_with_any_body_verifies_only_what_was_signed(
            nonce in "[!-~]{1,40}",
            timestamp in any::<i64>(),
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let key = key_of(SECRET).unwrap();
            let body = serde_json::json!({"nonce": nonce, "timestamp": timestamp}).to_string();
            let mac = sign_body(&key, body.as_bytes());
            let call = Call::parse(None, None, Some(&mac)).unwrap();
            let verified = call.verify([key.as_slice()], body.as_bytes());
            let understood = verified.is_ok() || matches!(verified, Err(Refusal::Malformed { .. }));
            prop_assert!(understood, "a signed body was refused as unsigned");
            let mut tampered = body.into_bytes();
            tampered.extend(&noise);
            if !noise.is_empty() {
                prop_assert!(call.verify([key.as_slice()], &tampered).is_err());
            }
        }

        #[test]
        fn any_secret_text_is_a_key_or_none(text in ".{0,80}") {
            let _ = key_of(&text);
        }
    }

    /// The Standard Webhooks specification's own test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TIMESTAMP: &str = "1614265330";
    const PAYLOAD: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn verify(
        id: Option<&str>,
        ts: Option<&str>,
        sig: &str,
        body: &[u8],
    ) -> Result<(String, Timestamp), Refusal> {
        let key = key_of(SECRET).unwrap();
        Call::parse(id, ts, Some(sig))?.verify([key.as_slice()], body)
    }

    #[test]
    fn the_standard_webhooks_test_vector_verifies() {
        let (nonce, ts) = verify(Some(ID), Some(TIMESTAMP), SIGNATURE, PAYLOAD).unwrap();
        assert_eq!(nonce, ID);
        assert_eq!(ts, Timestamp::from_secs(1_614_265_330));
        assert_eq!(
            sign(&key_of(SECRET).unwrap(), ID, 1_614_265_330, PAYLOAD),
            SIGNATURE
        );
    }

    #[test]
    fn a_valid_signature_among_decoys_verifies() {
        let header = format!("v1,Zm9v v2,abc {SIGNATURE} v1,bm9wZQ==");
        assert!(verify(Some(ID), Some(TIMESTAMP), &header, PAYLOAD).is_ok());
    }

    #[test]
    fn any_change_to_the_signed_content_fails() {
        let bad = Err(Refusal::InvalidSignature);
        assert_eq!(
            verify(
                Some(ID),
                Some(TIMESTAMP),
                SIGNATURE,
                br#"{"test": 2432232315}"#
            ),
            bad
        );
        assert_eq!(
            verify(
                Some(ID),
                Some(TIMESTAMP),
                SIGNATURE,
                b"{\"test\":2432232314}"
            ),
            bad
        );
        assert_eq!(
            verify(
                Some(ID),
                Some(TIMESTAMP),
                SIGNATURE,
                b"{\"test\": 2432232314}\n"
            ),
            bad
        );
        assert_eq!(
            verify(Some(ID), Some("1614265331"), SIGNATURE, PAYLOAD),
            bad
        );
        assert_eq!(
            verify(Some("msg_other"), Some(TIMESTAMP), SIGNATURE, PAYLOAD),
            bad
        );
        assert_eq!(verify(Some(ID), Some(TIMESTAMP), "", PAYLOAD), bad);
        assert_eq!(
            verify(Some(ID), Some(TIMESTAMP), "v1,!!!notbase64", PAYLOAD),
            bad
        );
        assert_eq!(verify(Some(ID), Some(TIMESTAMP), "v1,", PAYLOAD), bad);
    }

    #[test]
    fn malformed_timestamps_are_refused_before_any_check() {
        for ts in [
            "1.5",
            "1e9",
            "+1",
            "",
            " 1",
            "-1",
            "99999999999999999999",
            "0x10",
        ] {
            let refused = Call::parse(Some(ID), Some(ts), Some(SIGNATURE));
            assert!(
                matches!(
                    refused,
                    Err(Refusal::Malformed {
                        code: "invalid_timestamp",
                        ..
                    })
                ),
                "{ts:?}: {refused:?}"
            );
        }
    }

    #[test]
    fn the_body_form_is_signed_over_the_raw_body_and_carries_nonce_and_timestamp() {
        let key = [3u8; 32];
        let body = br#"{"nonce":"n-1","timestamp":1700000000,"reason":"cpu"}"#;
        let signature = sign_body(&key, body);
        let call = Call::parse(None, None, Some(&signature)).unwrap();
        let (nonce, ts) = call.verify([key.as_slice()], body).unwrap();
        assert_eq!(
            (nonce.as_str(), ts),
            ("n-1", Timestamp::from_secs(1_700_000_000))
        );
        let unsigned_nonce = br#"{"timestamp":1700000000}"#;
        let call = Call::parse(None, None, Some(&sign_body(&key, unsigned_nonce))).unwrap();
        assert!(matches!(
            call.verify([key.as_slice()], unsigned_nonce),
            Err(Refusal::Malformed {
                code: "missing_nonce",
                ..
            })
        ));
        assert!(Call::parse(Some("id-only"), None, Some(&signature)).is_err());
    }
}
