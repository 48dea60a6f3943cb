//! The JSON objects the benchmark programs print (`kv-client bench`, the
//! wal-core and kv-store bench examples): one object on the last line that
//! starts with `{`, read with serde_json, with typed accessors whose errors
//! name the field.

use serde_json::{Map, Value};

/// A parsed object, with typed accessors that fail with the key name.
#[derive(Debug, Clone, Default)]
pub struct Object {
    fields: Map<String, Value>,
}

impl Object {
    /// The number under `key`.
    pub fn num(&self, key: &str) -> Result<f64, String> {
        match self.fields.get(key) {
            Some(Value::Number(n)) => n
                .as_f64()
                .ok_or_else(|| format!("field `{key}` is not a finite number: {n}")),
            Some(other) => Err(format!("field `{key}` is not a number: {other}")),
            None => Err(format!("field `{key}` is missing")),
        }
    }

    /// The string under `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        self.fields.get(key).and_then(Value::as_str)
    }
}

/// Parses the last line of `output` that starts with `{` (programs may
/// print other lines before it).
pub fn parse_last_object(output: &str) -> Result<Object, String> {
    let line = output
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .ok_or_else(|| format!("no JSON object in the output: {:?}", truncate(output)))?;
    parse_object(line)
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(300) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// Parses one JSON object.
pub fn parse_object(text: &str) -> Result<Object, String> {
    match serde_json::from_str(text) {
        Ok(Value::Object(fields)) => Ok(Object { fields }),
        Ok(other) => Err(format!(
            "expected a JSON object, got {}",
            truncate(&other.to_string())
        )),
        Err(e) => Err(format!("bad JSON ({e}): {:?}", truncate(text))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_last_object_and_names_missing_or_mistyped_fields() {
        let o =
            parse_last_object("warming up\n{\"ops_per_sec\":12.5,\"error\":\"x\\ny\"}\n").unwrap();
        assert_eq!(o.num("ops_per_sec").unwrap(), 12.5);
        assert_eq!(o.str("error"), Some("x\ny"));
        assert!(
            o.num("missing")
                .unwrap_err()
                .contains("`missing` is missing")
        );
        assert!(o.num("error").unwrap_err().contains("not a number"));
        assert!(parse_last_object("no json here").is_err());
        assert!(parse_object("[1]").is_err());
        assert!(parse_object("{\"a\":1").is_err());
    }
}
