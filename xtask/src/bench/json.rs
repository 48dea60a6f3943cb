//! A parser for the one kind of JSON the benchmark programs print: a single
//! flat object whose values are numbers, strings, booleans or null. Nested
//! objects and arrays are refused, which keeps this small enough to trust
//! without pulling serde into xtask.

use std::collections::BTreeMap;

/// A value of a flat object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

/// A parsed flat object, with typed accessors that fail with the key name.
#[derive(Debug, Clone, Default)]
pub struct Object {
    fields: BTreeMap<String, Value>,
}

impl Object {
    /// The number under `key`.
    pub fn num(&self, key: &str) -> Result<f64, String> {
        match self.fields.get(key) {
            Some(Value::Num(n)) => Ok(*n),
            Some(other) => Err(format!("field `{key}` is not a number: {other:?}")),
            None => Err(format!("field `{key}` is missing")),
        }
    }

    /// The string under `key`, if it is a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
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

/// Parses one flat JSON object.
pub fn parse_object(text: &str) -> Result<Object, String> {
    let mut p = Parser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let object = p.object()?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(format!("trailing characters after the object at {}", p.pos));
    }
    Ok(object)
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected `{c}` at {}", self.pos))
        }
    }

    fn object(&mut self) -> Result<Object, String> {
        self.expect('{')?;
        let mut object = Object::default();
        self.skip_ws();
        if self.peek() == Some('}') {
            self.pos += 1;
            return Ok(object);
        }
        loop {
            self.skip_ws();
            let key = self.string()?;
            self.expect(':')?;
            let value = self.value()?;
            object.fields.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some('}') => {
                    self.pos += 1;
                    return Ok(object);
                }
                _ => return Err(format!("expected `,` or `}}` at {}", self.pos)),
            }
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.peek() {
            Some('"') => Ok(Value::Str(self.string()?)),
            Some('t') => self.word("true", Value::Bool(true)),
            Some('f') => self.word("false", Value::Bool(false)),
            Some('n') => self.word("null", Value::Null),
            Some(c) if c == '-' || c.is_ascii_digit() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_digit() || "+-.eE".contains(c))
                {
                    self.pos += 1;
                }
                let text: String = self.chars[start..self.pos].iter().collect();
                text.parse()
                    .map(Value::Num)
                    .map_err(|e| format!("bad number `{text}`: {e}"))
            }
            _ => Err(format!(
                "expected a number, string, boolean or null at {} (nested values are not supported)",
                self.pos
            )),
        }
    }

    fn word(&mut self, word: &str, value: Value) -> Result<Value, String> {
        let end = self.pos + word.len();
        if end <= self.chars.len() && self.chars[self.pos..end].iter().copied().eq(word.chars()) {
            self.pos = end;
            Ok(value)
        } else {
            Err(format!("expected `{word}` at {}", self.pos))
        }
    }

    fn string(&mut self) -> Result<String, String> {
        if self.peek() != Some('"') {
            return Err(format!("expected a string at {}", self.pos));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            match c {
                '"' => return Ok(out),
                '\\' => {
                    let escape = self.peek().ok_or("unterminated escape")?;
                    self.pos += 1;
                    match escape {
                        '"' | '\\' | '/' => out.push(escape),
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'u' => {
                            let end = self.pos + 4;
                            let hex: String = self
                                .chars
                                .get(self.pos..end)
                                .ok_or("short \\u escape")?
                                .iter()
                                .collect();
                            self.pos = end;
                            let code = u32::from_str_radix(&hex, 16)
                                .map_err(|e| format!("bad \\u escape `{hex}`: {e}"))?;
                            // Surrogate halves are not paired up: they only
                            // occur in error messages, where U+FFFD will do.
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => return Err(format!("unknown escape `\\{other}`")),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_bench_programs_print() {
        let o = parse_object(
            r#"{"ops":1000,"ops_per_sec":4842.13,"first_error":null,"policy":"always","neg":-1.5e3,"ok":true}"#,
        )
        .unwrap();
        assert_eq!(o.num("ops"), Ok(1000.0));
        assert_eq!(o.num("ops_per_sec"), Ok(4842.13));
        assert_eq!(o.num("neg"), Ok(-1500.0));
        assert_eq!(o.str("policy"), Some("always"));
        assert_eq!(o.str("first_error"), None);
        assert!(o.num("policy").is_err());
        assert!(o.num("absent").unwrap_err().contains("absent"));
    }

    #[test]
    fn decodes_escapes() {
        let o = parse_object(r#"{"e":"UNAVAILABLE: \"log\" failed\n\u00e9"}"#).unwrap();
        assert_eq!(o.str("e"), Some("UNAVAILABLE: \"log\" failed\né"));
    }

    #[test]
    fn refuses_nesting_and_garbage() {
        assert!(parse_object(r#"{"a":{"b":1}}"#).is_err());
        assert!(parse_object(r#"{"a":[1]}"#).is_err());
        assert!(parse_object(r#"{"a":1"#).is_err());
        assert!(parse_object(r#"{"a":1} x"#).is_err());
        assert!(parse_object("").is_err());
    }

    #[test]
    fn takes_the_last_object_line() {
        let o = parse_last_object("warming up\n{\"a\":1}\n{\"a\":2}\n").unwrap();
        assert_eq!(o.num("a"), Ok(2.0));
        assert!(parse_last_object("no json here").is_err());
    }
}
