//! Kafka's JAAS config strings, as users write them in `sasl.jaas.config`:
//! `org.apache.kafka.common.security.plain.PlainLoginModule required
//! username="admin" password="admin-secret" user_alice="alice-secret";`

use std::collections::BTreeMap;

/// The login module's class name and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JaasConfig {
    pub module: String,
    pub options: BTreeMap<String, String>,
}

impl JaasConfig {
    /// `user_<name>="<password>"` options: PLAIN's user database.
    pub fn plain_users(&self) -> BTreeMap<String, String> {
        self.options
            .iter()
            .filter_map(|(k, v)| k.strip_prefix("user_").map(|u| (u.to_string(), v.clone())))
            .collect()
    }
}

pub fn parse(s: &str) -> Result<JaasConfig, String> {
    let s = s.trim();
    let s = s.strip_suffix(';').unwrap_or(s).trim();
    let mut chars = s.char_indices().peekable();
    let word = |chars: &mut std::iter::Peekable<std::str::CharIndices>| -> String {
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut w = String::new();
        while let Some(&(_, c)) = chars.peek() {
            if c.is_whitespace() || c == '=' {
                break;
            }
            w.push(c);
            chars.next();
        }
        w
    };
    let module = word(&mut chars);
    if module.is_empty() {
        return Err("sasl.jaas.config names no login module".into());
    }
    let flag = word(&mut chars);
    if !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err(format!(
            "sasl.jaas.config: expected a control flag (required) after {module}, got {flag:?}"
        ));
    }
    let mut options = BTreeMap::new();
    loop {
        let key = word(&mut chars);
        if key.is_empty() {
            break;
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(format!("sasl.jaas.config: option {key} has no value"));
        }
        let value = if chars.peek().map(|(_, c)| *c) == Some('"') {
            chars.next();
            let mut v = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => v.push(c),
                }
            }
            if !closed {
                return Err(format!("sasl.jaas.config: unterminated value for {key}"));
            }
            v
        } else {
            word(&mut chars)
        };
        options.insert(key, value);
    }
    Ok(JaasConfig { module, options })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kafkas_plain_example() {
        let j = parse(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="admin-secret" user_admin="admin-secret" user_alice="alice secret \"q\"";"#,
        )
        .unwrap();
        assert_eq!(
            j.module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(j.options["username"], "admin");
        let users = j.plain_users();
        assert_eq!(users["alice"], "alice secret \"q\"");
        assert_eq!(users.len(), 2);
        assert!(parse("Foo").is_err());
        assert!(parse(r#"Foo required a="x"#).is_err());
    }
}
