//! JSON values that a state holds many of and reads rarely, kept as their text.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A JSON value kept in a state as its compact text (`null` as nothing): a provider's handle
/// for each server, a group's launch configuration. Such values are read rarely, while a
/// state holds many of them: as a [`Value`], even `{"pid": 1}` costs a map node of 640 bytes.
/// It serializes as the JSON it holds, and two are equal when their texts are: the text of a
/// value is compact with its keys sorted, and floats are read back exactly (serde_json's
/// `float_roundtrip`), so live and replayed states agree.
#[derive(Debug, Clone, Default)]
pub struct JsonText(Option<Box<RawValue>>);

impl JsonText {
    /// The text of `value`.
    pub fn new(value: &Value) -> JsonText {
        if value.is_null() {
            return JsonText::default();
        }
        // A `Value` always serializes: its map keys are strings.
        JsonText(Some(
            serde_json::value::to_raw_value(value).expect("a JSON value serializes"),
        ))
    }

    /// Whether it is `null` (for a handle: the server is not launched).
    pub fn is_null(&self) -> bool {
        self.0.is_none()
    }

    /// Its value.
    pub fn value(&self) -> Value {
        self.0
            .as_ref()
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or(Value::Null)
    }
}

impl PartialEq for JsonText {
    fn eq(&self, other: &JsonText) -> bool {
        self.0.as_ref().map(|raw| raw.get()) == other.0.as_ref().map(|raw| raw.get())
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_unit(),
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    /// Read as a value (so that any deserializer will do), kept as its text.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonText, D::Error> {
        Ok(JsonText::new(&Value::deserialize(deserializer)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_float_reads_back_as_the_value_it_was() {
        // Read without `float_roundtrip`, its text would come back one unit in the last place
        // off, and a launch configuration patched with itself would count as changed.
        let value: Value =
            serde_json::from_str(r#"{"start_seconds": 16081.39408817415051}"#).unwrap();
        let text = JsonText::new(&value);
        assert_eq!(text.value(), value);
        assert_eq!(JsonText::new(&text.value()), text);
    }
}
