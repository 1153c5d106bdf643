//! `ssl.principal.mapping.rules`: Kafka's rules turning a client
//! certificate's distinguished name into a principal name. Each rule is
//! `RULE:pattern/replacement/[L|U]` (a regular expression over the whole DN,
//! `$1`.. in the replacement, optional lower/upper casing) or `DEFAULT` (the
//! DN itself); the first rule that matches wins, and a DN no rule matches is
//! refused, as in Kafka.

use regex::Regex;

#[derive(Debug)]
enum Rule {
    Default,
    Pattern {
        regex: Regex,
        replacement: String,
        case: Option<char>,
    },
}

#[derive(Debug)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

impl Default for PrincipalMapper {
    fn default() -> Self {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }
}

/// Reads up to the next unescaped `/`, unescaping `\/`.
fn until_slash(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if s[i + 1..].starts_with('/') => {
                out.push('/');
                chars.next();
            }
            '/' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

impl PrincipalMapper {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |m: String| format!("ssl.principal.mapping.rules: {m}");
        let mut rules = Vec::new();
        let mut rest = text.trim();
        while !rest.is_empty() {
            rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
            if rest.is_empty() {
                break;
            }
            if let Some(r) = rest.strip_prefix("DEFAULT") {
                rules.push(Rule::Default);
                rest = r;
            } else if let Some(r) = rest.strip_prefix("RULE:") {
                let (pattern, r) = until_slash(r)
                    .ok_or_else(|| bad(format!("unterminated pattern in {rest:?}")))?;
                let (replacement, r) = until_slash(r)
                    .ok_or_else(|| bad(format!("unterminated replacement in {rest:?}")))?;
                let (case, r) = match r.chars().next() {
                    Some(c @ ('L' | 'U')) => (Some(c), &r[1..]),
                    _ => (None, r),
                };
                let regex = Regex::new(&pattern)
                    .map_err(|e| bad(format!("invalid pattern {pattern:?}: {e}")))?;
                rules.push(Rule::Pattern {
                    regex,
                    replacement: braced(&replacement),
                    case,
                });
                rest = r;
            } else {
                return Err(bad(format!(
                    "expected DEFAULT or RULE:pattern/replacement/[LU], got {rest:?}"
                )));
            }
            let r = rest.trim_start();
            if !r.is_empty() && !r.starts_with(',') {
                return Err(bad(format!("unexpected text {r:?}")));
            }
            rest = r;
        }
        if rules.is_empty() {
            rules.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules })
    }

    /// The principal name for a distinguished name, or `None` when no rule
    /// applies (the client is refused).
    pub fn map(&self, dn: &str) -> Option<String> {
        self.rules.iter().find_map(|r| match r {
            Rule::Default => Some(dn.to_string()),
            Rule::Pattern {
                regex,
                replacement,
                case,
            } => {
                let caps = regex.captures(dn)?;
                let mut out = String::new();
                caps.expand(replacement, &mut out);
                Some(match case {
                    Some('L') => out.to_lowercase(),
                    Some('U') => out.to_uppercase(),
                    _ => out,
                })
            }
        })
    }
}

/// `$1x` means group 1 then `x` in Java; Rust would read a group named `1x`.
fn braced(replacement: &str) -> String {
    let mut out = String::new();
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push_str("${");
            while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                out.push(d);
                chars.next();
            }
            out.push('}');
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_rules() {
        let m = PrincipalMapper::parse(
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$2/L,DEFAULT",
        )
        .unwrap();
        assert_eq!(
            m.map("CN=kafka1,OU=ServiceUsers,O=Org").as_deref(),
            Some("kafka1")
        );
        assert_eq!(
            m.map("CN=Duke,OU=JavaSoft,O=Sun").as_deref(),
            Some("duke@javasoft")
        );
        assert_eq!(m.map("C=US").as_deref(), Some("C=US"));
        let strict = PrincipalMapper::parse("RULE:^CN=([a-z]+)$/$1x/U").unwrap();
        assert_eq!(strict.map("CN=abc").as_deref(), Some("ABCX"));
        assert_eq!(strict.map("CN=abc,O=x"), None);
        assert!(PrincipalMapper::parse("RULE:^CN=(.*$").is_err());
        assert!(PrincipalMapper::parse("NOPE").is_err());
        assert_eq!(
            PrincipalMapper::parse("").unwrap().map("CN=a").as_deref(),
            Some("CN=a")
        );
    }
}
