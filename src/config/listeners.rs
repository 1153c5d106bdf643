//! Client listeners with Kafka's keys: `listeners`, `advertised.listeners`,
//! `listener.security.protocol.map`, and per-listener settings under
//! `listener.name.<name>.` (TLS keystores, SASL mechanisms and JAAS configs).

use std::collections::BTreeMap;

/// How a listener's connections are secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// One listener: where it binds, what it advertises, and its settings.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// Upper-case listener name (`PLAINTEXT`, `SASL_SSL`, or a custom name).
    pub name: String,
    pub protocol: SecurityProtocol,
    pub host: String,
    pub port: u16,
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Keys for this listener: `listener.name.<name>.KEY` wins over `KEY`.
    pub settings: BTreeMap<String, String>,
}

impl ListenerConfig {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }
}

/// `NAME://host:port` entries of a comma-separated list.
fn parse_endpoints(key: &str, v: &str) -> Result<Vec<(String, String, u16)>, String> {
    let mut out = Vec::new();
    for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = match item.split_once("://") {
            Some((n, r)) => (n.trim().to_ascii_uppercase(), r),
            None => ("PLAINTEXT".to_string(), item),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("{key}: expected NAME://host:port, got {item:?}"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("{key}: invalid port in {item:?}"))?;
        if out.iter().any(|(n, _, _)| *n == name) {
            return Err(format!("{key}: listener name {name} appears twice"));
        }
        out.push((name, host, port));
    }
    if out.is_empty() {
        return Err(format!("{key} names no listener"));
    }
    Ok(out)
}

/// Builds the listeners from the raw configuration.
pub fn parse(raw: &BTreeMap<String, String>) -> Result<Vec<ListenerConfig>, String> {
    let get = |k: &str| raw.get(k).map(|s| s.trim()).filter(|s| !s.is_empty());
    let endpoints = parse_endpoints(
        "listeners",
        get("listeners").unwrap_or("PLAINTEXT://127.0.0.1:9092"),
    )?;
    let mut map: BTreeMap<String, SecurityProtocol> = BTreeMap::new();
    if let Some(m) = get("listener.security.protocol.map") {
        for pair in m.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (n, p) = pair.split_once(':').ok_or_else(|| {
                format!("listener.security.protocol.map: expected NAME:PROTOCOL, got {pair:?}")
            })?;
            let proto = SecurityProtocol::parse(p.trim()).ok_or_else(|| {
                format!("listener.security.protocol.map: unknown security protocol {p:?}")
            })?;
            map.insert(n.trim().to_ascii_uppercase(), proto);
        }
    }
    let advertised: BTreeMap<String, (String, u16)> = match get("advertised.listeners") {
        Some(v) => parse_endpoints("advertised.listeners", v)?
            .into_iter()
            .map(|(n, h, p)| (n, (h, p)))
            .collect(),
        None => BTreeMap::new(),
    };
    for name in advertised.keys() {
        if !endpoints.iter().any(|(n, _, _)| n == name) {
            return Err(format!(
                "advertised.listeners names {name}, which is not in listeners"
            ));
        }
    }
    let mut out = Vec::new();
    for (name, host, port) in endpoints {
        let protocol = match map.get(&name) {
            Some(p) => *p,
            None => SecurityProtocol::parse(&name).ok_or_else(|| {
                format!(
                    "listener {name} has no security protocol: add {name}:PROTOCOL to listener.security.protocol.map"
                )
            })?,
        };
        let (advertised_host, advertised_port) = match advertised.get(&name) {
            Some((h, p)) => (h.clone(), *p),
            // Clients resolve `localhost` to ::1 first; advertise IPv4 loopback
            // instead of an unspecified or name-based listen address.
            None => match host.as_str() {
                "" | "0.0.0.0" | "localhost" | "::" => ("127.0.0.1".to_string(), port),
                h => (h.to_string(), port),
            },
        };
        let prefix = format!("listener.name.{}.", name.to_ascii_lowercase());
        let mut settings: BTreeMap<String, String> = raw
            .iter()
            .filter(|(k, _)| !k.starts_with("listener.name."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, v) in raw {
            if let Some(rest) = k.strip_prefix(&prefix) {
                settings.insert(rest.to_string(), v.clone());
            }
        }
        out.push(ListenerConfig {
            name,
            protocol,
            host,
            port,
            advertised_host,
            advertised_port,
            settings,
        });
    }
    Ok(out)
}

/// `metrics.listener`: `http://host:port` or `host:port`, as `host:port`.
pub fn parse_metrics_listener(v: &str) -> Result<String, String> {
    let rest = v.strip_prefix("http://").unwrap_or(v);
    let (host, port) = rest
        .trim_end_matches('/')
        .rsplit_once(':')
        .ok_or_else(|| format!("metrics.listener: expected http://host:port, got {v:?}"))?;
    port.parse::<u16>()
        .map_err(|_| format!("metrics.listener: invalid port in {v:?}"))?;
    Ok(format!("{host}:{port}"))
}

/// True for keys this module reads (so they are not warned about).
pub fn is_listener_key(key: &str) -> bool {
    key.starts_with("listener.name.")
        || key.starts_with("ssl.")
        || key.starts_with("sasl.")
        || key == "listener.security.protocol.map"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn several_listeners_with_custom_names_and_overrides() {
        let l = parse(&raw(&[
            (
                "listeners",
                "PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9093,INTERNAL://127.0.0.1:9094",
            ),
            (
                "listener.security.protocol.map",
                "INTERNAL:SASL_PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
            ),
            ("advertised.listeners", "SASL_SSL://broker.example:19093"),
            ("sasl.enabled.mechanisms", "PLAIN"),
            (
                "listener.name.sasl_ssl.sasl.enabled.mechanisms",
                "SCRAM-SHA-512",
            ),
        ]))
        .unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].protocol, SecurityProtocol::Plaintext);
        assert_eq!(l[1].protocol, SecurityProtocol::SaslSsl);
        assert_eq!(
            (l[1].advertised_host.as_str(), l[1].advertised_port),
            ("broker.example", 19093)
        );
        assert_eq!(l[1].get("sasl.enabled.mechanisms"), Some("SCRAM-SHA-512"));
        assert_eq!(l[2].protocol, SecurityProtocol::SaslPlaintext);
        assert_eq!(l[2].get("sasl.enabled.mechanisms"), Some("PLAIN"));
        assert_eq!(l[2].advertised_host, "127.0.0.1");
    }

    #[test]
    fn unknown_names_and_protocols_are_errors() {
        assert!(parse(&raw(&[("listeners", "FOO://127.0.0.1:1")])).is_err());
        assert!(parse(&raw(&[
            ("listeners", "PLAINTEXT://127.0.0.1:1"),
            ("advertised.listeners", "SSL://h:2")
        ]))
        .is_err());
        assert!(parse(&raw(&[(
            "listeners",
            "PLAINTEXT://127.0.0.1:1,PLAINTEXT://127.0.0.1:2"
        )]))
        .is_err());
    }
}
