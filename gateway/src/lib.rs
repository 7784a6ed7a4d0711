//! iPHR gateway: card sign-in with an origin-bound challenge (DESIGN §4), sessions, and the store
//! (DESIGN §7). Consent, audit and the partner API (DESIGN §5–§6) come with issue 6.
//!
//! Layers, outside in:
//! - [`server`]: TLS (rustls) accept loop, [`server::serve`].
//! - [`http`]: routing, extraction, cookies, error → status. No rules live here.
//! - [`domain`]: token parsing and validation, certificates and revocation, nonces, sessions,
//!   person binding.
//! - [`store`]: sqlx on SQLite (embedded default, WAL) or PostgreSQL, one file per aggregate.
//!
//! [`config`] reads a TOML file plus `IPHR_GATEWAY_*` environment variables; [`clock`] lets tests
//! move time.

pub mod clock;
pub mod config;
pub mod domain;
pub mod fuzzing;
pub mod http;
pub mod importer;
pub mod partners;
pub mod server;
pub mod sources;
pub mod store;
pub mod tls;

pub use server::{Gateway, GatewayError, serve};
