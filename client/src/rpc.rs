//! [`Rpc`]: the generated `JsonKvClient` on one server's channel, with the bearer token attached
//! to every call and room for large messages.

use std::fmt;

use jsonkv::pb::json_kv_client::JsonKvClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Request, Status};

use crate::Error;

/// A value may be 1 MiB of JSON and a list page holds up to 1000 of them; tonic's 4 MiB default
/// would reject such responses.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The generated client with the token attached to every call.
pub(crate) type Rpc = JsonKvClient<InterceptedService<Channel, BearerToken>>;

/// The generated client on `channel`, sending `token` with every call.
pub(crate) fn rpc(channel: Channel, token: BearerToken) -> Rpc {
    JsonKvClient::with_interceptor(channel, token)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Adds the `authorization` header to every call; without a token, adds nothing. The header
/// value is marked sensitive, so HTTP/2 never puts it in its compression table and debug
/// output shows it as `Sensitive`.
#[derive(Clone)]
pub(crate) struct BearerToken(Option<MetadataValue<Ascii>>);

impl BearerToken {
    pub(crate) fn new(token: Option<&str>) -> Result<Self, Error> {
        let Some(token) = token else {
            return Ok(BearerToken(None));
        };
        let invalid = || {
            Error::Config(
                "the token must be visible ASCII without spaces (it travels in an HTTP header)"
                    .into(),
            )
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid());
        }
        let mut value: MetadataValue<Ascii> =
            format!("Bearer {token}").parse().map_err(|_| invalid())?;
        value.set_sensitive(true);
        Ok(BearerToken(Some(value)))
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "BearerToken(<redacted>)"
        } else {
            "BearerToken(None)"
        })
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_and_never_shown() {
        assert!(BearerToken::new(Some("has space")).is_err());
        assert!(BearerToken::new(Some("")).is_err());
        let token = BearerToken::new(Some("s3cret-token")).unwrap();
        assert_eq!(format!("{token:?}"), "BearerToken(<redacted>)");
    }
}
