//! The iPHR source protocol (`docs/source-protocol.md`) and a reference source server.
//!
//! - [`protocol`]: wire types and encodings, shared with the gateway's connector;
//! - [`server`]: a source serving a directory of files (`<data_dir>/<pseudonym>/<file>`) to
//!   registered gateways over mutual TLS, to holders of a card-signed grant. The tests and the
//!   demo run it; a real health-check institution, insurer or OP cloud can start from it;
//! - [`tls`]: mutual TLS with registered client certificates (also the gateway's partner listener).

pub mod protocol;
pub mod server;
pub mod tls;
