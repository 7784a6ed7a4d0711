//! The web origin the card signs (DESIGN §4 step 2): the ASCII serialisation `scheme://host[:port]`
//! (RFC 6454 §6.2), lower-case, without a trailing slash or path. The gateway signs against its
//! own configured origin, never one taken from a request.

/// Checks that `origin` is a serialised HTTPS (or loopback HTTP) origin.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let rest = if let Some(rest) = origin.strip_prefix("https://") {
        rest
    } else if let Some(rest) = origin.strip_prefix("http://") {
        let host = rest.split(':').next().unwrap_or_default();
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err("plain http is only allowed for loopback".into());
        }
        rest
    } else {
        return Err("must start with https://".into());
    };
    if rest.is_empty()
        || rest.contains(['/', '?', '#', '@'])
        || rest.chars().any(char::is_whitespace)
    {
        return Err("must be scheme://host[:port] without path, query or user".into());
    }
    if rest != rest.to_ascii_lowercase() {
        return Err("must be lower-case".into());
    }
    Ok(())
}
