//! SaslHandshake (17) and SaslAuthenticate (36): the connection's SASL
//! exchange, run by its `Session`. A failed login is answered with
//! SASL_AUTHENTICATION_FAILED and the connection is closed; the log names the
//! peer and the user, never the password.

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::dispatch::RequestContext;
use crate::network::session::{AuthOutcome, HandshakeError};

pub async fn handshake(ctx: &RequestContext, req: SaslHandshakeRequest) -> SaslHandshakeResponse {
    let s = &ctx.session;
    let mechanisms: Vec<StrBytes> = s
        .enabled_mechanisms()
        .into_iter()
        .map(StrBytes::from_string)
        .collect();
    // v0: the SASL tokens follow as raw frames (no SaslAuthenticate).
    let code = match s.handshake(req.mechanism.as_str(), ctx.api_version == 0) {
        Ok(()) => 0,
        Err(HandshakeError::IllegalState) => {
            tracing::warn!(peer = %ctx.peer, "SaslHandshake refused: not expected on this connection");
            ResponseError::IllegalSaslState.code()
        }
        Err(HandshakeError::Unsupported) => {
            tracing::warn!(peer = %ctx.peer, mechanism = %req.mechanism.as_str(), "SaslHandshake refused: mechanism not enabled");
            ResponseError::UnsupportedSaslMechanism.code()
        }
    };
    if code != 0 {
        ctx.broker.metrics.error("SaslHandshake", code);
    }
    SaslHandshakeResponse::default()
        .with_error_code(code)
        .with_mechanisms(mechanisms)
}

/// The response, and whether the connection must close after it.
pub async fn authenticate(
    ctx: &RequestContext,
    req: SaslAuthenticateRequest,
) -> (SaslAuthenticateResponse, bool) {
    let s = &ctx.session;
    match s.authenticate(&req.auth_bytes, &ctx.broker.credentials) {
        Ok(AuthOutcome::Continue(reply)) => (
            SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(reply)),
            false,
        ),
        Ok(AuthOutcome::Done {
            reply,
            lifetime_ms,
            reauthenticated,
        }) => {
            if let Some(p) = s.principal() {
                if reauthenticated {
                    tracing::debug!(peer = %ctx.peer, principal = %p, listener = %s.listener.config.name, lifetime_ms, "SASL re-authentication succeeded");
                } else {
                    tracing::info!(peer = %ctx.peer, principal = %p, listener = %s.listener.config.name, lifetime_ms, "SASL authentication succeeded");
                }
            }
            // v0 has no lifetime field: its clients cannot re-authenticate.
            (
                SaslAuthenticateResponse::default()
                    .with_auth_bytes(Bytes::from(reply))
                    .with_session_lifetime_ms(lifetime_ms),
                false,
            )
        }
        Err(e) => {
            tracing::warn!(
                peer = %ctx.peer,
                user = e.user.as_deref().unwrap_or("?"),
                listener = %s.listener.config.name,
                error = %e.message,
                "SASL authentication failed; closing connection"
            );
            let code = ResponseError::SaslAuthenticationFailed.code();
            ctx.broker.metrics.error("SaslAuthenticate", code);
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(code)
                    .with_error_message(Some(StrBytes::from_string(e.message))),
                true,
            )
        }
    }
}
