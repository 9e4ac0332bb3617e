//! Whole numbers as JSON Schema reads them: an `integer` field accepts `55` and `55.0` alike
//! (JSON has one number type, and a number whose fraction is zero is an integer), so each
//! integer field of a request body is read through these, never refused for a `.0`.

use serde::{Deserialize, Deserializer};

/// A whole number of type `T`, read from any JSON number with no fraction within `T`'s range.
struct Whole<T>(T);

impl<'de, T: TryFrom<i128>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let number = serde_json::Number::deserialize(deserializer)?;
        let wide = if let Some(n) = number.as_i64() {
            Some(i128::from(n))
        } else if let Some(n) = number.as_u64() {
            Some(i128::from(n))
        } else {
            // Past ±2^63 every f64 is out of range of the fields read here; `as` saturates.
            number
                .as_f64()
                .filter(|f| f.is_finite() && f.fract() == 0.0)
                .map(|f| f as i128)
        };
        wide.and_then(|n| T::try_from(n).ok())
            .map(Whole)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a whole number within the field's range, got {number}"
                ))
            })
    }
}

/// A required integer field.
pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    deserializer: D,
) -> Result<T, D::Error> {
    Whole::deserialize(deserializer).map(|w| w.0)
}

/// An optional integer field (with `#[serde(default)]`).
pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    Option::<Whole<T>>::deserialize(deserializer).map(|w| w.map(|w| w.0))
}

/// An integer field that may be absent (`None`), null (`Some(None)`) or set (with
/// `#[serde(default)]`).
pub fn nullable<'de, D: Deserializer<'de>, T: TryFrom<i128>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    optional(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "required")]
        count: u32,
        #[serde(default, deserialize_with = "optional")]
        delta: Option<i64>,
    }

    fn read(json: &str) -> Result<Body, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_zero_fraction_is_a_whole_number_and_anything_else_is_refused() {
        let body = read(r#"{"count": 55.0, "delta": -3.0}"#).unwrap();
        assert_eq!((body.count, body.delta), (55, Some(-3)));
        assert_eq!(read(r#"{"count": 7}"#).unwrap().delta, None);
        for bad in [
            r#"{"count": 55.5}"#,
            r#"{"count": -1}"#,
            r#"{"count": 4294967296}"#,
            r#"{"count": 1e300}"#,
            r#"{"count": "5"}"#,
            r#"{"count": 1, "delta": 9223372036854775808}"#,
        ] {
            let error = read(bad).unwrap_err().to_string();
            assert!(!error.is_empty(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_finite_f64_is_read_exactly_or_refused(f in any::<f64>().prop_filter("finite", |f| f.is_finite())) {
            let json = serde_json::to_string(&serde_json::json!({"count": 0, "delta": f})).unwrap();
            // The number as JSON text reads back (serde_json's parsing may land an ulp away).
            let sent: f64 = serde_json::from_str::<serde_json::Value>(&json).unwrap()["delta"]
                .as_f64()
                .unwrap();
            match read(&json) {
                Ok(body) => {
                    let delta = body.delta.unwrap();
                    prop_assert_eq!(delta as f64, sent);
                }
                Err(_) => prop_assert!(sent.fract() != 0.0 || sent.abs() >= 9.223_372_036_854_776e18),
            }
        }
    }
}
