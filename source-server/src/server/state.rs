//! What a source remembers (`<state_dir>/state.json`): registered keys, burnt enrollment codes,
//! issued and redeemed nonces (protocol §3–§4), and the file journal that gives every file a
//! sequence number the first time it is seen (§5 cursors). Written whole, atomically (temporary
//! file, fsync, rename), after every change.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// A person's registered card key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "alg", rename_all = "lowercase", deny_unknown_fields)]
pub enum LinkedKey {
    /// PHR card service key: SEC1 uncompressed P-256 point.
    P256 {
        /// base64.
        #[serde(with = "crate::protocol::b64")]
        sec1: Vec<u8>,
    },
    /// My Number card 利用者証明用 key: SubjectPublicKeyInfo DER.
    Jpki {
        /// base64.
        #[serde(with = "crate::protocol::b64")]
        spki: Vec<u8>,
    },
}

/// One registered pseudonym.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// The key grants must be signed with.
    pub key: LinkedKey,
    /// Unix seconds.
    pub linked_at: i64,
}

/// A file as first seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalEntry {
    /// Sequence number: the file id and the cursor.
    pub seq: u64,
    /// Whose.
    pub pseudonym: String,
    /// File name within the person's directory.
    pub name: String,
    /// SHA-256, hex.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
    /// Categories of its records.
    pub categories: Vec<String>,
}

/// Everything persisted.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// pseudonym → key.
    pub links: BTreeMap<String, Link>,
    /// Enrollment codes already used.
    pub used_codes: BTreeSet<String>,
    /// Issued, not yet redeemed nonces (base64url) → expiry (Unix s).
    pub issued_nonces: BTreeMap<String, i64>,
    /// Redeemed nonces → SHA-256 (hex) of the grant that redeemed them.
    pub redeemed_nonces: BTreeMap<String, String>,
    /// Files, in the order first seen.
    pub journal: Vec<JournalEntry>,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// File.
        path: PathBuf,
        /// Error.
        source: std::io::Error,
    },
    /// The file is not a state file.
    #[error("{path}: not a source state file: {source}")]
    Corrupt {
        /// File.
        path: PathBuf,
        /// Error.
        source: serde_json::Error,
    },
}

impl State {
    /// Reads `dir/state.json` (an absent file is an empty state).
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io { path, source }),
        }
    }

    /// Writes `dir/state.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join("state.json");
        let tmp = dir.join(".state.json.tmp");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        // Serializing plain maps and strings cannot fail.
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| io(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// Drops issued nonces past their expiry.
    pub fn purge_nonces(&mut self, now: i64) {
        self.issued_nonces.retain(|_, expires| *expires >= now);
    }

    /// The next journal sequence number.
    pub fn next_seq(&self) -> u64 {
        self.journal.last().map_or(1, |e| e.seq + 1)
    }
}
