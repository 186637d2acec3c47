//! portcullis: an authenticating reverse proxy.
//!
//! # Layout
//! - [`config`]: file + environment → validated, immutable [`config::Config`].
//! - [`oidc`]: the OpenID Connect relying party (discovery, PAR, callback, tokens, userinfo).
//! - [`session`]: server-side sessions, the store, cookies, single-flight refresh.
//! - [`proxy`]: the upstream client and header rewriting.

pub mod config;
pub mod oidc;
pub mod proxy;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type of every response portcullis produces, streamed or generated.
pub type ResponseBody = BoxBody<Bytes, BoxError>;
