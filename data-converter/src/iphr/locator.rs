//! [`Locator`]: where in the source an entry came from, a string that the entries of one document
//! can share.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::Deref;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Where in the source an entry came from (an XPath, `line N, column NAME` …). Behaves as a
/// `str` (deref, comparison, hash, display, serde as a JSON string). The entries of one CDA
/// document share one buffer of their XPaths ([`Locator::shared`]) instead of a heap string each.
#[derive(Clone)]
pub struct Locator(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Owned(String),
    /// `text[start..end]`, at character boundaries (checked when built).
    Shared {
        text: Arc<str>,
        start: u32,
        end: u32,
    },
}

impl Locator {
    /// `text[range]`, sharing `text`; `None` if the range is not a slice of `text` at character
    /// boundaries or does not fit in `u32`.
    pub fn shared(text: &Arc<str>, range: std::ops::Range<usize>) -> Option<Self> {
        text.get(range.clone())?;
        Some(Self(Repr::Shared {
            text: Arc::clone(text),
            start: u32::try_from(range.start).ok()?,
            end: u32::try_from(range.end).ok()?,
        }))
    }

    /// The locator as a string slice.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Owned(s) => s,
            // Invariant: checked in `shared` (in bounds, at character boundaries).
            Repr::Shared { text, start, end } => {
                text.get(*start as usize..*end as usize).unwrap_or_default()
            }
        }
    }
}

impl Default for Locator {
    fn default() -> Self {
        Self(Repr::Static(""))
    }
}

impl Deref for Locator {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Locator {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Locator {
    fn from(s: String) -> Self {
        Self(Repr::Owned(s))
    }
}

impl From<&'static str> for Locator {
    fn from(s: &'static str) -> Self {
        Self(Repr::Static(s))
    }
}

impl PartialEq for Locator {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Locator {}

impl PartialEq<str> for Locator {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Locator {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Locator {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Locator {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Locator {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_owned_and_static_locators_are_the_same_strings() {
        let text: Arc<str> = Arc::from("/a/b[2]/c/a/d");
        let shared = Locator::shared(&text, 0..9).unwrap();
        assert_eq!(shared, "/a/b[2]/c");
        assert_eq!(shared, Locator::from("/a/b[2]/c".to_owned()));
        assert_eq!(Locator::from("/a/b[2]/c"), shared);
        assert_eq!(serde_json::to_string(&shared).unwrap(), r#""/a/b[2]/c""#);
        let back: Locator = serde_json::from_str(r#""/a/b[2]/c""#).unwrap();
        assert_eq!(back, shared);
        assert_eq!(format!("{shared} {shared:?}"), r#"/a/b[2]/c "/a/b[2]/c""#);
        assert!(Locator::shared(&text, 9..14).is_none());
        let jp: Arc<str> = Arc::from("/観察");
        assert!(Locator::shared(&jp, 0..2).is_none());
        assert_eq!(Locator::default(), "");
    }
}
