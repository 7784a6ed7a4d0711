//! card-agent library.
