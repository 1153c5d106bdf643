//! TLS for SSL and SASL_SSL listeners (rustls), configured with Kafka's keys:
//! `ssl.keystore.type=PEM` with `ssl.keystore.location` (key and chain in one
//! file, the key optionally encrypted with `ssl.key.password`) or inline
//! `ssl.keystore.key` / `ssl.keystore.certificate.chain`, or
//! `ssl.keystore.type=PKCS12` with `ssl.keystore.password`; the truststore
//! likewise (PEM or PKCS12); `ssl.client.auth`, `ssl.enabled.protocols`,
//! `ssl.cipher.suites`; the client certificate's subject gives the principal.

use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::listeners::ListenerConfig;

fn pem_source(l: &ListenerConfig, location_key: &str, what: &str) -> Result<Vec<u8>, String> {
    let path = l
        .get(location_key)
        .ok_or_else(|| format!("listener {}: {location_key} is required for {what}", l.name))?;
    std::fs::read(path).map_err(|e| format!("{location_key}={path}: {e}"))
}

#[derive(PartialEq)]
enum StoreType {
    Pem,
    Pkcs12,
}

/// `ssl.keystore.type` / `ssl.truststore.type`. Kafka's default is JKS, a
/// Java format: without a type, PEM is assumed; JKS is refused by name.
fn store_type(l: &ListenerConfig, key: &str) -> Result<StoreType, String> {
    match l.get(key).map(|s| s.trim().to_ascii_uppercase()) {
        None => Ok(StoreType::Pem),
        Some(t) if t == "PEM" => Ok(StoreType::Pem),
        Some(t) if t == "PKCS12" => Ok(StoreType::Pkcs12),
        Some(t) => Err(format!(
            "listener {}: {key}={t} is not supported; use PEM or PKCS12 (convert a JKS store with: keytool -importkeystore -srckeystore store.jks -destkeystore store.p12 -deststoretype PKCS12)",
            l.name
        )),
    }
}

/// A PKCS12 store from `location_key`, opened with `password_key`.
fn pkcs12(
    l: &ListenerConfig,
    location_key: &str,
    password_key: &str,
    policy: p12_keystore::Pkcs12ImportPolicy,
) -> Result<p12_keystore::KeyStore, String> {
    let data = pem_source(l, location_key, "a PKCS12 store")?;
    let password = l.get(password_key).ok_or_else(|| {
        format!(
            "listener {}: {password_key} is required for a PKCS12 store",
            l.name
        )
    })?;
    p12_keystore::KeyStore::from_pkcs12(&data, password, policy).map_err(|e| {
        format!(
            "listener {}: cannot open {location_key} (wrong {password_key}?): {e}",
            l.name
        )
    })
}

/// The private key of a PEM keystore, decrypted with `ssl.key.password`
/// when it is an encrypted PKCS#8 key.
fn pem_private_key(l: &ListenerConfig, key_pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    let text = String::from_utf8_lossy(key_pem);
    const BEGIN: &str = "-----BEGIN ENCRYPTED PRIVATE KEY-----";
    const END: &str = "-----END ENCRYPTED PRIVATE KEY-----";
    if let (Some(b), Some(e)) = (text.find(BEGIN), text.find(END)) {
        let password = l.get("ssl.key.password").ok_or_else(|| {
            format!(
                "listener {}: the keystore's private key is encrypted: set ssl.key.password",
                l.name
            )
        })?;
        let block = &text[b..e + END.len()];
        let (_, doc) = pkcs8::SecretDocument::from_pem(block)
            .map_err(|e| format!("listener {}: encrypted private key: {e}", l.name))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("listener {}: encrypted private key: {e}", l.name))?;
        let plain = info.decrypt(password).map_err(|e| {
            format!(
                "listener {}: cannot decrypt the private key (wrong ssl.key.password?): {e}",
                l.name
            )
        })?;
        return Ok(PrivateKeyDer::Pkcs8(plain.as_bytes().to_vec().into()));
    }
    PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        format!(
            "listener {}: cannot read the keystore private key: {e}",
            l.name
        )
    })
}

/// The listener's certificate chain and private key.
fn keystore(
    l: &ListenerConfig,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    if store_type(l, "ssl.keystore.type")? == StoreType::Pkcs12 {
        let ks = pkcs12(
            l,
            "ssl.keystore.location",
            "ssl.keystore.password",
            p12_keystore::Pkcs12ImportPolicy::Relaxed,
        )?;
        let (_, chain) = ks.private_key_chain().ok_or_else(|| {
            format!(
                "listener {}: the PKCS12 keystore holds no private key with its certificate chain",
                l.name
            )
        })?;
        let certs: Vec<CertificateDer<'static>> = chain
            .certs()
            .iter()
            .map(|c| CertificateDer::from(c.as_der().to_vec()))
            .collect();
        if certs.is_empty() {
            return Err(format!(
                "listener {}: the PKCS12 keystore's key has no certificate",
                l.name
            ));
        }
        return Ok((
            certs,
            PrivateKeyDer::Pkcs8(chain.key().as_der().to_vec().into()),
        ));
    }
    let (chain_pem, key_pem) = match (
        l.get("ssl.keystore.key"),
        l.get("ssl.keystore.certificate.chain"),
    ) {
        (Some(k), Some(c)) => (c.as_bytes().to_vec(), k.as_bytes().to_vec()),
        _ => {
            let both = pem_source(l, "ssl.keystore.location", "a TLS listener")?;
            (both.clone(), both)
        }
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            format!(
                "listener {}: cannot read the keystore certificates: {e}",
                l.name
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "listener {}: the keystore holds no certificate",
            l.name
        ));
    }
    Ok((chain, pem_private_key(l, &key_pem)?))
}

fn versions(l: &ListenerConfig) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    let Some(list) = l.get("ssl.enabled.protocols") else {
        return Ok(vec![&rustls::version::TLS13, &rustls::version::TLS12]);
    };
    let mut out = Vec::new();
    for p in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match p {
            "TLSv1.3" => out.push(&rustls::version::TLS13),
            "TLSv1.2" => out.push(&rustls::version::TLS12),
            other => {
                return Err(format!(
                "listener {}: ssl.enabled.protocols: {other} is not supported (TLSv1.2, TLSv1.3)",
                l.name
            ))
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "listener {}: ssl.enabled.protocols is empty",
            l.name
        ));
    }
    Ok(out)
}

/// The crypto provider, narrowed to `ssl.cipher.suites` when set (Java/IANA
/// names such as TLS_AES_128_GCM_SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256).
fn provider(l: &ListenerConfig) -> Result<rustls::crypto::CryptoProvider, String> {
    let mut p = rustls::crypto::ring::default_provider();
    if let Some(list) = l.get("ssl.cipher.suites").filter(|s| !s.trim().is_empty()) {
        let wanted: Vec<String> = list.split(',').map(|s| s.trim().to_string()).collect();
        p.cipher_suites.retain(|s| {
            let name = format!("{:?}", s.suite()).replacen("TLS13_", "TLS_", 1);
            wanted.contains(&name)
        });
        if p.cipher_suites.is_empty() {
            return Err(format!(
                "listener {}: ssl.cipher.suites names no suite this broker supports",
                l.name
            ));
        }
    } else {
        // AES-128-GCM first: as strong for this use and cheaper than
        // AES-256 for both ends of a connection that moves hundreds of MB/s.
        p.cipher_suites
            .sort_by_key(|s| !format!("{:?}", s.suite()).contains("AES_128_GCM"));
    }
    Ok(p)
}

/// Whether the broker's suite order wins over the client's: yes unless the
/// operator listed suites (then the client picks among them).
fn prefer_server_order(l: &ListenerConfig) -> bool {
    l.get("ssl.cipher.suites")
        .is_none_or(|s| s.trim().is_empty())
}

/// A TLS listener's set-up: the acceptor for new connections and the
/// certificate it presents.
#[derive(Clone)]
pub struct TlsSetup {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub leaf: CertificateDer<'static>,
}

pub fn setup(l: &ListenerConfig) -> Result<TlsSetup, String> {
    let (config, leaf) = server_config(l)?;
    Ok(TlsSetup {
        acceptor: tokio_rustls::TlsAcceptor::from(config),
        leaf,
    })
}

/// The subject alternative names of a certificate, as `DNS:name` / `IP:addr`.
fn sans(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let Ok(Some(ext)) = parsed.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => format!("DNS:{d}"),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                _ => format!("IP:{ip:?}"),
            },
            other => format!("{other:?}"),
        })
        .collect()
}

/// Kafka's rule for a keystore changed at runtime (KIP-978): the new
/// certificate keeps the old one's subject and every one of its alternative
/// names, unless `ssl.allow.dn.changes` / `ssl.allow.san.changes` say
/// otherwise.
pub fn check_identity(
    l: &ListenerConfig,
    old: &CertificateDer<'_>,
    new: &CertificateDer<'_>,
) -> Result<(), String> {
    let allowed = |k: &str| {
        l.get(k)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    };
    if !allowed("ssl.allow.dn.changes") && principal_of(old) != principal_of(new) {
        return Err(format!(
            "listener {}: the new keystore's certificate subject {:?} differs from the current {:?} (set ssl.allow.dn.changes=true to allow it)",
            l.name,
            principal_of(new).unwrap_or_default(),
            principal_of(old).unwrap_or_default()
        ));
    }
    if !allowed("ssl.allow.san.changes") {
        let now = sans(new);
        let lost: Vec<String> = sans(old).into_iter().filter(|s| !now.contains(s)).collect();
        if !lost.is_empty() {
            return Err(format!(
                "listener {}: the new keystore's certificate drops subject alternative names {} (set ssl.allow.san.changes=true to allow it)",
                l.name,
                lost.join(", ")
            ));
        }
    }
    Ok(())
}

/// The rustls configuration of a TLS listener, and the certificate it presents.
fn server_config(
    l: &ListenerConfig,
) -> Result<(Arc<rustls::ServerConfig>, CertificateDer<'static>), String> {
    let (chain, key) = keystore(l)?;
    let leaf = chain[0].clone();
    let provider = Arc::new(provider(l)?);
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions(l)?)
        .map_err(|e| format!("listener {}: {e}", l.name))?;
    let client_auth = l
        .get("ssl.client.auth")
        .unwrap_or("none")
        .to_ascii_lowercase();
    let builder = match client_auth.as_str() {
        "none" => builder.with_no_client_auth(),
        "requested" | "required" => {
            let roots = trust_roots(l, "ssl.client.auth")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if client_auth == "requested" {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("listener {}: client certificate verifier: {e}", l.name))?;
            builder.with_client_cert_verifier(verifier)
        }
        other => {
            return Err(format!(
                "listener {}: ssl.client.auth={other}: expected none, requested or required",
                l.name
            ))
        }
    };
    let mut cfg = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("listener {}: keystore: {e}", l.name))?;
    cfg.alpn_protocols.clear();
    cfg.ignore_client_order = prefer_server_order(l);
    Ok((Arc::new(cfg), leaf))
}

/// The listener's truststore (PKCS12 or PEM) as rustls roots.
fn trust_roots(l: &ListenerConfig, needed_for: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let mut add = |cert: CertificateDer<'static>| {
        roots
            .add(cert)
            .map_err(|e| format!("listener {}: truststore: {e}", l.name))
    };
    if store_type(l, "ssl.truststore.type")? == StoreType::Pkcs12 {
        // Raw: every certificate counts, also those OpenSSL writes
        // without Java's "trusted" attribute (before 3.2 it cannot).
        let ts = pkcs12(
            l,
            "ssl.truststore.location",
            "ssl.truststore.password",
            p12_keystore::Pkcs12ImportPolicy::Raw,
        )?;
        for (_, entry) in ts.entries() {
            match entry {
                p12_keystore::KeyStoreEntry::Certificate(c) => {
                    add(CertificateDer::from(c.as_der().to_vec()))?
                }
                p12_keystore::KeyStoreEntry::PrivateKeyChain(chain) => {
                    for c in chain.certs() {
                        add(CertificateDer::from(c.as_der().to_vec()))?;
                    }
                }
                _ => {}
            }
        }
    } else {
        let pem = match l.get("ssl.truststore.certificates") {
            Some(inline) => inline.as_bytes().to_vec(),
            None => pem_source(l, "ssl.truststore.location", needed_for)?,
        };
        for cert in CertificateDer::pem_slice_iter(&pem) {
            add(cert.map_err(|e| format!("listener {}: truststore: {e}", l.name))?)?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "listener {}: the truststore (ssl.truststore.location) holds no certificate to trust",
            l.name
        ));
    }
    Ok(roots)
}

/// The TLS client set-up for connecting to other brokers' `l` listener:
/// their certificates checked against the listener's truststore; this
/// broker's own keystore presented (listeners may require client
/// certificates).
pub fn client_config(l: &ListenerConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let roots = trust_roots(l, "connecting to other brokers over TLS")?;
    let provider = Arc::new(provider(l)?);
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions(l)?)
        .map_err(|e| format!("listener {}: {e}", l.name))?
        .with_root_certificates(roots);
    let cfg = match keystore(l) {
        Ok((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("listener {}: keystore: {e}", l.name))?,
        Err(_) => builder.with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// Kafka's DEFAULT principal for a client certificate: its subject as an
/// RFC 2253 distinguished name (most specific attribute first).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let mut rdns: Vec<String> = Vec::new();
    for rdn in parsed.subject().iter() {
        let mut parts = Vec::new();
        for a in rdn.iter() {
            let oid = a.attr_type();
            let name = x509_parser::objects::oid2abbrev(oid, x509_parser::objects::oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| oid.to_id_string());
            let name = match name.as_str() {
                "commonName" => "CN".to_string(),
                other => other.to_string(),
            };
            let value = a.as_str().unwrap_or("").to_string();
            parts.push(format!("{name}={}", escape_dn(&value)));
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
