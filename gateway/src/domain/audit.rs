//! The audit log's rules (DESIGN §7; security-scenarios G), independent of storage:
//! - [`AuditRecord`]: who did what to whose data, with which outcome;
//! - [`EntryFields`]: a record normalised into the stored text form, with bounded fields
//!   ([`MAX_ID_BYTES`], [`MAX_RESOURCES`], [`MAX_PURPOSE_BYTES`], [`MAX_DETAIL_BYTES`]);
//! - [`canonical_bytes`] and [`entry_hash`]: the hash chain,
//!   `entry_hash = SHA-256(prev_hash ‖ canonical)`, where every variable-length field is
//!   length-prefixed, so no field value (CR/LF, ANSI escapes, JSON breakers, huge values) can
//!   forge or split an entry (G6);
//! - [`Checkpoint`], [`CheckpointSigner`], [`CheckpointVerifier`]: signed checkpoints as C2SP
//!   signed notes (<https://c2sp.org/signed-note>) in the shape of a C2SP tlog-checkpoint
//!   (<https://c2sp.org/tlog-checkpoint>): origin line, tree size, base64 hash, Ed25519 signature.
//!   The hash is the chain head (the `entry_hash` of entry `size`), not a Merkle root;
//! - [`verify`]: walks entries and checkpoints and names the first bad seq and why (G3, G4);
//! - [`to_fhir_audit_event`]: a BALP-style FHIR R4 AuditEvent of a record (E10).
//!
//! The format is described in `docs/audit.md`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Longest actor id, person id and resource id, in bytes (longer ones are truncated, see
/// [`bound_str`]).
pub const MAX_ID_BYTES: usize = 256;
/// Most resource ids in one entry (more are cut to `MAX_RESOURCES - 1` plus a marker).
pub const MAX_RESOURCES: usize = 256;
/// Longest purpose, in bytes.
pub const MAX_PURPOSE_BYTES: usize = 1024;
/// Longest serialised detail JSON, in bytes (longer is replaced by a summary with its SHA-256).
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;
/// The hash before the first entry.
pub const GENESIS_HASH: [u8; 32] = [0; 32];
/// Domain separation tag at the start of the canonical bytes (format version 1).
pub const CANONICAL_TAG: &[u8] = b"iphr-audit-v1\n";

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A partner PHR service, by OAuth client id.
    Partner(String),
    /// The worker themself (kiosk), by person id.
    Person(String),
    /// A source service (importer), by service id.
    Source(String),
    /// Occupational-health staff, by staff id.
    Staff(String),
    /// The gateway itself (drop-directory imports, maintenance).
    System,
}

impl Actor {
    /// The stored `(actor_kind, actor_id)` pair.
    pub fn parts(&self) -> (&'static str, &str) {
        match self {
            Actor::Partner(id) => ("partner", id),
            Actor::Person(id) => ("person", id),
            Actor::Source(id) => ("source", id),
            Actor::Staff(id) => ("staff", id),
            Actor::System => ("system", ""),
        }
    }
}

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// FHIR read of one resource.
    Read,
    /// FHIR search.
    Search,
    /// `Patient/$everything`.
    Everything,
    /// Bulk `$export` (kick-off or file download).
    Export,
    /// An import of source data.
    Import,
    /// The worker granted consent to a partner.
    ConsentGrant,
    /// The worker revoked consent.
    ConsentRevoke,
    /// Card sign-in.
    SignIn,
    /// Sign-out (explicit or timeout).
    SignOut,
    /// A staff member viewed a person's record.
    StaffView,
    /// Data of a person was deleted.
    Delete,
    /// A partner obtained an access token.
    TokenIssue,
    /// The worker linked their card at a source (`docs/source-protocol.md` §3).
    SourceLink,
    /// The worker's card signed a grant for a source (§4).
    SourceGrant,
    /// A pull from a source, or a refusal during one (§7).
    Pull,
    /// The worker erased their record (security-scenarios K1, `docs/privacy.md`).
    Erasure,
}

impl AuditAction {
    /// Every action, for parsing and tests.
    pub const ALL: [AuditAction; 16] = [
        AuditAction::Read,
        AuditAction::Search,
        AuditAction::Everything,
        AuditAction::Export,
        AuditAction::Import,
        AuditAction::ConsentGrant,
        AuditAction::ConsentRevoke,
        AuditAction::SignIn,
        AuditAction::SignOut,
        AuditAction::StaffView,
        AuditAction::Delete,
        AuditAction::TokenIssue,
        AuditAction::SourceLink,
        AuditAction::SourceGrant,
        AuditAction::Pull,
        AuditAction::Erasure,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Read => "read",
            AuditAction::Search => "search",
            AuditAction::Everything => "everything",
            AuditAction::Export => "export",
            AuditAction::Import => "import",
            AuditAction::ConsentGrant => "consent-grant",
            AuditAction::ConsentRevoke => "consent-revoke",
            AuditAction::SignIn => "sign-in",
            AuditAction::SignOut => "sign-out",
            AuditAction::StaffView => "staff-view",
            AuditAction::Delete => "delete",
            AuditAction::TokenIssue => "token-issue",
            AuditAction::SourceLink => "source-link",
            AuditAction::SourceGrant => "source-grant",
            AuditAction::Pull => "pull",
            AuditAction::Erasure => "erasure",
        }
    }

    /// The action of a stored name.
    pub fn parse(s: &str) -> Option<AuditAction> {
        AuditAction::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Allowed and done.
    Permit,
    /// Refused (no consent, bad credentials, …).
    Deny,
    /// Failed on the gateway's side.
    Error,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Permit => "permit",
            Outcome::Deny => "deny",
            Outcome::Error => "error",
        }
    }

    /// The outcome of a stored name.
    pub fn parse(s: &str) -> Option<Outcome> {
        [Outcome::Permit, Outcome::Deny, Outcome::Error]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

/// One audited event, as callers describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (ms since the Unix epoch, UTC).
    pub at_ms: i64,
    /// Who.
    pub actor: Actor,
    /// What.
    pub action: AuditAction,
    /// How it ended.
    pub outcome: Outcome,
    /// Whose data, when a person's data is concerned.
    pub person_id: Option<String>,
    /// The resource ids concerned (bounded, see [`MAX_RESOURCES`]).
    pub resources: Vec<String>,
    /// The purpose of use claimed or consented.
    pub purpose: Option<String>,
    /// Further structured detail (never clinical payload, PINs or tokens).
    pub detail: Option<Value>,
}

impl AuditRecord {
    /// A record with no person, resources, purpose or detail.
    pub fn new(at_ms: i64, actor: Actor, action: AuditAction, outcome: Outcome) -> AuditRecord {
        AuditRecord {
            at_ms,
            actor,
            action,
            outcome,
            person_id: None,
            resources: Vec::new(),
            purpose: None,
            detail: None,
        }
    }
}

/// A record in its stored form: the exact strings that are hashed and stored. Built by
/// [`EntryFields::from_record`]; read back from the database as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryFields {
    /// ms since the Unix epoch.
    pub at_ms: i64,
    /// `partner`, `person`, `source`, `staff` or `system`.
    pub actor_kind: String,
    /// The actor's id (empty for `system`).
    pub actor_id: String,
    /// [`AuditAction::as_str`].
    pub action: String,
    /// [`Outcome::as_str`].
    pub outcome: String,
    /// Whose data.
    pub person_id: Option<String>,
    /// The resource ids as a JSON array of strings.
    pub resources: String,
    /// Purpose of use.
    pub purpose: Option<String>,
    /// Detail as JSON text.
    pub detail: Option<String>,
}

/// Bounds a string: NUL becomes U+FFFD (PostgreSQL text cannot hold NUL) and a value longer than
/// `max` bytes is cut at a character boundary and ends in `…[truncated N bytes]`, N the original
/// length, the whole at most `max` bytes. Other characters (CR, LF, ESC, quotes) are kept: the
/// canonical form is length-prefixed, so they cannot split an entry.
pub fn bound_str(s: &str, max: usize) -> String {
    let clean: std::borrow::Cow<'_, str> = if s.contains('\0') {
        s.replace('\0', "\u{FFFD}").into()
    } else {
        s.into()
    };
    if clean.len() <= max {
        return clean.into_owned();
    }
    let marker = format!("…[truncated {} bytes]", clean.len());
    let mut cut = max.saturating_sub(marker.len());
    while cut > 0 && !clean.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut out = String::with_capacity(cut + marker.len());
    out.push_str(&clean[..cut]);
    out.push_str(&marker);
    out
}

impl EntryFields {
    /// Normalises a record under the documented bounds (see [`bound_str`]; more than
    /// [`MAX_RESOURCES`] ids keep the first `MAX_RESOURCES - 1` and end in `…[+K more]`; a detail
    /// whose JSON exceeds [`MAX_DETAIL_BYTES`] becomes `{"truncated":true,"bytes":N,"sha256":…}`).
    pub fn from_record(record: &AuditRecord) -> EntryFields {
        let (kind, id) = record.actor.parts();
        let mut resources: Vec<String> = record
            .resources
            .iter()
            .take(MAX_RESOURCES)
            .map(|r| bound_str(r, MAX_ID_BYTES))
            .collect();
        if record.resources.len() > MAX_RESOURCES {
            resources.truncate(MAX_RESOURCES - 1);
            resources.push(format!(
                "…[+{} more]",
                record.resources.len() - (MAX_RESOURCES - 1)
            ));
        }
        let resources = serde_json::to_string(&resources).unwrap_or_else(|_| "[]".into());
        let detail = record.detail.as_ref().map(|d| {
            let text = serde_json::to_string(d).unwrap_or_else(|_| "null".into());
            if text.len() <= MAX_DETAIL_BYTES {
                text
            } else {
                json!({
                    "truncated": true,
                    "bytes": text.len(),
                    "sha256": hex(&super::sha256(text.as_bytes())),
                })
                .to_string()
            }
        });
        EntryFields {
            at_ms: record.at_ms,
            actor_kind: kind.to_owned(),
            actor_id: bound_str(id, MAX_ID_BYTES),
            action: record.action.as_str().to_owned(),
            outcome: record.outcome.as_str().to_owned(),
            person_id: record
                .person_id
                .as_deref()
                .map(|p| bound_str(p, MAX_ID_BYTES)),
            resources,
            purpose: record
                .purpose
                .as_deref()
                .map(|p| bound_str(p, MAX_PURPOSE_BYTES)),
            detail,
        }
    }

    /// Parses the stored form back into a record (for rendering); `None` when a stored name is
    /// unknown or a JSON field does not parse.
    pub fn to_record(&self) -> Option<AuditRecord> {
        let actor = match self.actor_kind.as_str() {
            "partner" => Actor::Partner(self.actor_id.clone()),
            "person" => Actor::Person(self.actor_id.clone()),
            "source" => Actor::Source(self.actor_id.clone()),
            "staff" => Actor::Staff(self.actor_id.clone()),
            "system" => Actor::System,
            _ => return None,
        };
        Some(AuditRecord {
            at_ms: self.at_ms,
            actor,
            action: AuditAction::parse(&self.action)?,
            outcome: Outcome::parse(&self.outcome)?,
            person_id: self.person_id.clone(),
            resources: serde_json::from_str(&self.resources).ok()?,
            purpose: self.purpose.clone(),
            detail: match &self.detail {
                Some(d) => Some(serde_json::from_str(d).ok()?),
                None => None,
            },
        })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every stored field is bounded far below 4 GiB; a longer one (impossible through
    // `from_record`, possible in a tampered row) saturates and the hash then simply differs.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_opt(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => out.push(0),
        Some(v) => {
            out.push(1);
            put_bytes(out, v.as_bytes());
        }
    }
}

/// The canonical bytes of entry `seq`: [`CANONICAL_TAG`], seq (u64 BE), at_ms (i64 BE), then
/// actor_kind, actor_id, action, outcome as (u32 BE length ‖ UTF-8 bytes), person_id as an
/// optional (0x00, or 0x01 ‖ length ‖ bytes), resources (length-prefixed JSON text), purpose
/// and detail as optionals.
pub fn canonical_bytes(seq: u64, f: &EntryFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        128 + f.actor_id.len()
            + f.resources.len()
            + f.detail.as_ref().map_or(0, String::len)
            + f.purpose.as_ref().map_or(0, String::len),
    );
    out.extend_from_slice(CANONICAL_TAG);
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&f.at_ms.to_be_bytes());
    put_bytes(&mut out, f.actor_kind.as_bytes());
    put_bytes(&mut out, f.actor_id.as_bytes());
    put_bytes(&mut out, f.action.as_bytes());
    put_bytes(&mut out, f.outcome.as_bytes());
    put_opt(&mut out, f.person_id.as_deref());
    put_bytes(&mut out, f.resources.as_bytes());
    put_opt(&mut out, f.purpose.as_deref());
    put_opt(&mut out, f.detail.as_deref());
    out
}

/// `SHA-256(prev_hash ‖ canonical_bytes(seq, fields))`.
pub fn entry_hash(prev_hash: &[u8; 32], seq: u64, fields: &EntryFields) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(prev_hash);
    ctx.update(&canonical_bytes(seq, fields));
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// One entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// The hashed fields.
    pub fields: EntryFields,
    /// The previous entry's hash as stored (32 bytes when intact).
    pub prev_hash: Vec<u8>,
    /// This entry's hash as stored.
    pub entry_hash: Vec<u8>,
}

// ---------------------------------------------------------------- checkpoints

/// Signature algorithm byte of Ed25519 in C2SP signed-note key ids and verifier keys.
const ED25519_ALG: u8 = 0x01;
/// Longest accepted note (the checkpoint body is ~100 bytes; a few signatures fit).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

/// Why a key or checkpoint could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The PKCS#8 file is not an Ed25519 key.
    #[error("signing key is not an Ed25519 PKCS#8 key")]
    BadSigningKey,
    /// The key name is empty or contains whitespace or `+`.
    #[error("key name must be non-empty without whitespace or '+'")]
    BadKeyName,
    /// The verifier key is not `<name>+<hex key id>+<base64(0x01 ‖ key)>` or its id does not match.
    #[error("verifier key is malformed: {0}")]
    BadVerifierKey(&'static str),
    /// The note is not a checkpoint: wrong lines, size or hash.
    #[error("checkpoint is malformed: {0}")]
    Malformed(&'static str),
    /// The note's origin is not the one expected.
    #[error("checkpoint origin {found:?} is not {expected:?}")]
    WrongOrigin {
        /// The expected origin.
        expected: String,
        /// The note's origin.
        found: String,
    },
    /// No signature line of the verifier's key.
    #[error("checkpoint has no signature by key {0}")]
    NoSignature(String),
    /// The signature line of the key does not verify.
    #[error("checkpoint signature by key {0} does not verify")]
    BadSignature(String),
    /// Signing failed (ring).
    #[error("signing failed")]
    Signing,
}

/// A checkpoint: the log had `size` entries and entry `size` had hash `head_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// `entry_hash` of entry `size` ([`GENESIS_HASH`] for size 0).
    pub head_hash: [u8; 32],
}

impl Checkpoint {
    /// The note body: `origin\nsize\nbase64(head_hash)\n`.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.head_hash)
        )
    }
}

/// A checkpoint with its signed-note text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The 4-byte key id.
    pub key_id: [u8; 4],
    /// The Ed25519 signature over [`Checkpoint::body`].
    pub signature: Vec<u8>,
    /// The whole note: body, blank line, `— name base64(key id ‖ signature)`.
    pub note: String,
}

fn check_key_name(name: &str) -> Result<(), CheckpointError> {
    if name.is_empty() || name.len() > 256 || name.contains(|c: char| c.is_whitespace() || c == '+')
    {
        return Err(CheckpointError::BadKeyName);
    }
    Ok(())
}

/// C2SP signed-note key id: the first 4 bytes of SHA-256(name ‖ `\n` ‖ 0x01 ‖ public key).
pub fn key_id(name: &str, public_key: &[u8]) -> [u8; 4] {
    let mut buf = Vec::with_capacity(name.len() + 2 + public_key.len());
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.push(ED25519_ALG);
    buf.extend_from_slice(public_key);
    let h = super::sha256(&buf);
    [h[0], h[1], h[2], h[3]]
}

/// Signs checkpoints with an Ed25519 key under a key name.
#[derive(Debug)]
pub struct CheckpointSigner {
    name: String,
    key: Ed25519KeyPair,
    key_id: [u8; 4],
}

impl CheckpointSigner {
    /// A signer from a PKCS#8 (v1 or v2) Ed25519 key.
    pub fn from_pkcs8(name: &str, pkcs8: &[u8]) -> Result<CheckpointSigner, CheckpointError> {
        check_key_name(name)?;
        let key = Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
            .map_err(|_| CheckpointError::BadSigningKey)?;
        let key_id = key_id(name, key.public_key().as_ref());
        Ok(CheckpointSigner {
            name: name.to_owned(),
            key,
            key_id,
        })
    }

    /// A fresh PKCS#8 v2 Ed25519 key.
    pub fn generate_pkcs8() -> Result<Vec<u8>, CheckpointError> {
        let rng = ring::rand::SystemRandom::new();
        Ed25519KeyPair::generate_pkcs8(&rng)
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| CheckpointError::Signing)
    }

    /// The key name (also the checkpoint origin).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> CheckpointVerifier {
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(self.key.public_key().as_ref());
        CheckpointVerifier {
            name: self.name.clone(),
            key_id: self.key_id,
            public_key,
        }
    }

    /// Signs a checkpoint of `size` entries ending in `head_hash`, with origin = the key name.
    pub fn sign(&self, size: u64, head_hash: [u8; 32]) -> SignedCheckpoint {
        let checkpoint = Checkpoint {
            origin: self.name.clone(),
            size,
            head_hash,
        };
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes()).as_ref().to_vec();
        let mut blob = self.key_id.to_vec();
        blob.extend_from_slice(&signature);
        let note = format!("{body}\n\u{2014} {} {}\n", self.name, B64.encode(blob));
        SignedCheckpoint {
            checkpoint,
            key_id: self.key_id,
            signature,
            note,
        }
    }
}

/// Verifies checkpoint notes of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointVerifier {
    name: String,
    key_id: [u8; 4],
    public_key: [u8; 32],
}

impl CheckpointVerifier {
    /// Parses a C2SP verifier key `<name>+<hex key id>+<base64(0x01 ‖ 32-byte key)>`.
    pub fn parse(vkey: &str) -> Result<CheckpointVerifier, CheckpointError> {
        let vkey = vkey.trim();
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CheckpointError::BadVerifierKey("expected name+id+key"));
        };
        check_key_name(name)?;
        let key = B64
            .decode(key_b64)
            .map_err(|_| CheckpointError::BadVerifierKey("key is not base64"))?;
        if key.len() != 33 || key[0] != ED25519_ALG {
            return Err(CheckpointError::BadVerifierKey("not an Ed25519 key"));
        }
        let mut public_key = [0u8; 32];
        public_key.copy_from_slice(&key[1..]);
        let key_id = key_id(name, &public_key);
        if id_hex.len() != 8 || !id_hex.eq_ignore_ascii_case(&hex(&key_id)) {
            return Err(CheckpointError::BadVerifierKey(
                "key id does not match the key",
            ));
        }
        Ok(CheckpointVerifier {
            name: name.to_owned(),
            key_id,
            public_key,
        })
    }

    /// The verifier key text (see [`CheckpointVerifier::parse`]).
    pub fn to_vkey(&self) -> String {
        let mut key = vec![ED25519_ALG];
        key.extend_from_slice(&self.public_key);
        format!("{}+{}+{}", self.name, hex(&self.key_id), B64.encode(key))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Parses a signed checkpoint note and checks its signature by this key and that its origin
    /// is the key name. Other keys' signature lines are ignored (as signed-note allows).
    pub fn open(&self, note: &str) -> Result<Checkpoint, CheckpointError> {
        if note.len() > MAX_NOTE_BYTES {
            return Err(CheckpointError::Malformed("note too long"));
        }
        let Some(split) = note.find("\n\n") else {
            return Err(CheckpointError::Malformed(
                "no blank line before signatures",
            ));
        };
        let body = &note[..=split];
        let signatures = &note[split + 2..];
        let mut lines = body.split_terminator('\n');
        let (Some(origin), Some(size), Some(hash)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed("fewer than three body lines"));
        };
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin"));
        }
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed("size is not a decimal number"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("size out of range"))?;
        let hash = B64
            .decode(hash)
            .map_err(|_| CheckpointError::Malformed("hash is not base64"))?;
        let head_hash: [u8; 32] = hash
            .try_into()
            .map_err(|_| CheckpointError::Malformed("hash is not 32 bytes"))?;
        if origin != self.name {
            return Err(CheckpointError::WrongOrigin {
                expected: self.name.clone(),
                found: origin.to_owned(),
            });
        }
        let prefix = format!("\u{2014} {} ", self.name);
        let mut found = false;
        for line in signatures.split_terminator('\n') {
            let Some(sig_b64) = line.strip_prefix(&prefix) else {
                continue;
            };
            let Ok(blob) = B64.decode(sig_b64) else {
                continue;
            };
            if blob.len() != 4 + 64 || blob[..4] != self.key_id {
                continue;
            }
            found = true;
            if UnparsedPublicKey::new(&ED25519, &self.public_key)
                .verify(body.as_bytes(), &blob[4..])
                .is_ok()
            {
                return Ok(Checkpoint {
                    origin: origin.to_owned(),
                    size,
                    head_hash,
                });
            }
        }
        if found {
            Err(CheckpointError::BadSignature(self.name.clone()))
        } else {
            Err(CheckpointError::NoSignature(self.name.clone()))
        }
    }
}

// ---------------------------------------------------------------- verification

/// What is wrong at the first bad position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// The seq is not the next one: entries before it are missing (deleted).
    #[error("entry missing: expected seq {expected}, found seq {found}")]
    Gap {
        /// The seq that should have come.
        expected: u64,
        /// The seq that came.
        found: i64,
    },
    /// The seq repeats or goes back (reordered or duplicated).
    #[error("seq out of order after seq {previous}")]
    OutOfOrder {
        /// The previous entry's seq.
        previous: u64,
    },
    /// A hash column is not 32 bytes.
    #[error("{0} is not 32 bytes")]
    BadHashLength(&'static str),
    /// The stored prev_hash is not the previous entry's hash: an entry was inserted, deleted or
    /// reordered here.
    #[error("prev_hash does not match the previous entry (inserted, deleted or reordered entry)")]
    BrokenLink,
    /// The entry's content does not hash to its stored entry_hash: it was changed.
    #[error("entry content does not match its entry_hash (changed entry)")]
    ContentChanged,
    /// The entry at a checkpoint's size does not have the checkpoint's hash: the log was
    /// rewritten or rolled back.
    #[error(
        "entry hash differs from the signed checkpoint of size {size} (rewritten or rolled back)"
    )]
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// The log ends before a checkpoint's size: entries were truncated (or the database rolled
    /// back).
    #[error(
        "log has {log_size} entries but a signed checkpoint covers {checkpoint_size} (truncated or rolled back)"
    )]
    Truncated {
        /// The checkpoint's size.
        checkpoint_size: u64,
        /// Entries present.
        log_size: u64,
    },
}

/// The first bad seq and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log broken at seq {seq}: {violation}")]
pub struct VerifyFailure {
    /// The first seq where the log is not intact (for truncation: the first missing seq).
    pub seq: u64,
    /// Why.
    pub violation: Violation,
}

/// An intact log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Entries checked.
    pub size: u64,
    /// The last entry's hash ([`GENESIS_HASH`] when empty).
    pub head_hash: [u8; 32],
    /// Checkpoints the log is consistent with.
    pub checkpoints: usize,
    /// The largest checkpoint size checked.
    pub largest_checkpoint: u64,
}

/// Incremental verifier: feed entries in stored seq order with [`ChainVerifier::push`], then
/// [`ChainVerifier::finish`].
#[derive(Debug)]
pub struct ChainVerifier {
    next: u64,
    prev: [u8; 32],
    /// Checkpoints sorted by size.
    checkpoints: Vec<Checkpoint>,
    /// Index of the next checkpoint to reach.
    cp: usize,
}

impl ChainVerifier {
    /// A verifier that will also check `checkpoints` (already signature-checked).
    pub fn new(mut checkpoints: Vec<Checkpoint>) -> ChainVerifier {
        checkpoints.sort_by_key(|c| c.size);
        let mut v = ChainVerifier {
            next: 1,
            prev: GENESIS_HASH,
            checkpoints,
            cp: 0,
        };
        // Size-0 checkpoints are checked against the genesis hash at once.
        while let Some(c) = v.checkpoints.get(v.cp).filter(|c| c.size == 0) {
            if c.head_hash != GENESIS_HASH {
                // Reported at finish: keep it pending by not advancing.
                break;
            }
            v.cp += 1;
        }
        v
    }

    /// Checks the next entry.
    pub fn push(&mut self, e: &StoredEntry) -> Result<(), VerifyFailure> {
        let fail = |seq: u64, violation| Err(VerifyFailure { seq, violation });
        if let Some(c) = self.checkpoints.get(self.cp).filter(|c| c.size == 0) {
            return fail(0, Violation::CheckpointMismatch { size: c.size });
        }
        let expected = self.next;
        match u64::try_from(e.seq) {
            Ok(s) if s == expected => {}
            Ok(s) if s > expected => {
                return fail(
                    expected,
                    Violation::Gap {
                        expected,
                        found: e.seq,
                    },
                );
            }
            _ => {
                return fail(
                    expected,
                    Violation::OutOfOrder {
                        previous: expected - 1,
                    },
                );
            }
        }
        let Ok(prev) = <[u8; 32]>::try_from(e.prev_hash.as_slice()) else {
            return fail(expected, Violation::BadHashLength("prev_hash"));
        };
        let Ok(stored) = <[u8; 32]>::try_from(e.entry_hash.as_slice()) else {
            return fail(expected, Violation::BadHashLength("entry_hash"));
        };
        if entry_hash(&prev, expected, &e.fields) != stored {
            return fail(expected, Violation::ContentChanged);
        }
        if prev != self.prev {
            return fail(expected, Violation::BrokenLink);
        }
        while let Some(c) = self.checkpoints.get(self.cp).filter(|c| c.size == expected) {
            if c.head_hash != stored {
                return fail(expected, Violation::CheckpointMismatch { size: c.size });
            }
            self.cp += 1;
        }
        self.prev = stored;
        self.next += 1;
        Ok(())
    }

    /// Ends the walk: every checkpoint must have been reached.
    pub fn finish(self) -> Result<VerifySummary, VerifyFailure> {
        let size = self.next - 1;
        if let Some(c) = self.checkpoints.get(self.cp) {
            if c.size == 0 {
                return Err(VerifyFailure {
                    seq: 0,
                    violation: Violation::CheckpointMismatch { size: 0 },
                });
            }
            return Err(VerifyFailure {
                seq: size + 1,
                violation: Violation::Truncated {
                    checkpoint_size: c.size,
                    log_size: size,
                },
            });
        }
        Ok(VerifySummary {
            size,
            head_hash: self.prev,
            checkpoints: self.checkpoints.len(),
            largest_checkpoint: self.checkpoints.last().map_or(0, |c| c.size),
        })
    }
}

/// Verifies a whole log (entries in stored seq order) against checkpoints whose signatures were
/// already checked.
pub fn verify(
    entries: impl IntoIterator<Item = StoredEntry>,
    checkpoints: Vec<Checkpoint>,
) -> Result<VerifySummary, VerifyFailure> {
    let mut v = ChainVerifier::new(checkpoints);
    for e in entries {
        v.push(&e)?;
    }
    v.finish()
}

// ---------------------------------------------------------------- FHIR rendering

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const AUTHZ: &str = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType";
const REST_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";

/// A BALP-style FHIR R4 AuditEvent of a record. Partner data accesses (read, search,
/// `$everything`, `$export`) are consent authorization decisions: type DCM 110113 "Security
/// Alert", subtype BALP `AuthZ-Consent` plus the RESTful interaction. Sign-in/out are DCM 110114
/// with 110122/110123; imports DCM 110107; consent changes and other events DCM 110110.
pub fn to_fhir_audit_event(record: &AuditRecord) -> Value {
    let coding = |system: &str, code: &str, display: &str| json!({"system": system, "code": code, "display": display});
    let (kind, id) = record.actor.parts();
    let partner_access = matches!(record.actor, Actor::Partner(_))
        && matches!(
            record.action,
            AuditAction::Read | AuditAction::Search | AuditAction::Everything | AuditAction::Export
        );
    let (event_type, mut subtype, action_code) = match record.action {
        _ if partner_access => (
            coding(DCM, "110113", "Security Alert"),
            vec![coding(
                AUTHZ,
                "AuthZ-Consent",
                "Authorization Decision using Roles and Consent",
            )],
            "E",
        ),
        AuditAction::SignIn => (
            coding(DCM, "110114", "User Authentication"),
            vec![coding(DCM, "110122", "Login")],
            "E",
        ),
        AuditAction::SignOut => (
            coding(DCM, "110114", "User Authentication"),
            vec![coding(DCM, "110123", "Logout")],
            "E",
        ),
        AuditAction::Import => (coding(DCM, "110107", "Import"), vec![], "C"),
        AuditAction::Export => (coding(DCM, "110106", "Export"), vec![], "R"),
        AuditAction::ConsentGrant => (coding(DCM, "110110", "Patient Record"), vec![], "C"),
        AuditAction::ConsentRevoke => (coding(DCM, "110110", "Patient Record"), vec![], "U"),
        AuditAction::Delete | AuditAction::Erasure => {
            (coding(DCM, "110110", "Patient Record"), vec![], "D")
        }
        _ => (coding(DCM, "110110", "Patient Record"), vec![], "R"),
    };
    let interaction = match record.action {
        AuditAction::Read => Some(("read", "read")),
        AuditAction::Search => Some(("search-type", "search type")),
        AuditAction::Everything | AuditAction::Export => Some(("operation", "operation")),
        _ => None,
    };
    if let Some((code, display)) = interaction {
        subtype.push(coding(REST_INTERACTION, code, display));
    }
    let (outcome, outcome_desc) = match record.outcome {
        Outcome::Permit => ("0", "permit"),
        Outcome::Deny => ("8", "deny"),
        Outcome::Error => ("12", "error"),
    };
    let mut agent = json!({
        "type": {"coding": [coding(
            "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "IRCP",
            "information recipient",
        )]},
        "who": {"identifier": {"system": format!("urn:iphr:{kind}"), "value": id}},
        "requestor": true,
    });
    if let Some(purpose) = &record.purpose {
        agent["purposeOfUse"] = json!([{"text": purpose}]);
    }
    let mut entity = Vec::new();
    if let Some(person) = &record.person_id {
        entity.push(json!({
            "what": {"reference": format!("Patient/{person}")},
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1", "Person"),
            "role": coding("http://terminology.hl7.org/CodeSystem/object-role", "1", "Patient"),
        }));
    }
    for r in &record.resources {
        entity.push(json!({
            "what": {"reference": r},
            "type": coding("http://terminology.hl7.org/CodeSystem/audit-entity-type", "2", "System Object"),
        }));
    }
    let mut event = json!({
        "resourceType": "AuditEvent",
        "type": event_type,
        "action": action_code,
        "recorded": rfc3339_ms(record.at_ms),
        "outcome": outcome,
        "outcomeDesc": outcome_desc,
        "agent": [agent],
        "source": {
            "observer": {"display": "iphr-gateway"},
            "type": [coding("http://terminology.hl7.org/CodeSystem/security-source-type", "4", "Application Server")],
        },
    });
    if !subtype.is_empty() {
        event["subtype"] = Value::Array(subtype);
    }
    if !entity.is_empty() {
        event["entity"] = Value::Array(entity);
    }
    event
}

/// `YYYY-MM-DDThh:mm:ss.sssZ` of ms since the Unix epoch (proleptic Gregorian, UTC).
pub fn rfc3339_ms(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let ms = at_ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let tod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        tod / 3600,
        tod % 3600 / 60,
        tod % 60
    )
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn record(i: i64) -> AuditRecord {
        AuditRecord {
            at_ms: 1_700_000_000_000 + i,
            actor: Actor::Partner("p1".into()),
            action: AuditAction::Read,
            outcome: Outcome::Permit,
            person_id: Some(format!("person-{i}")),
            resources: vec![format!("Observation/{i}")],
            purpose: Some("treatment".into()),
            detail: Some(json!({"n": i})),
        }
    }

    fn chain(n: i64) -> Vec<StoredEntry> {
        let mut prev = GENESIS_HASH;
        (1..=n)
            .map(|seq| {
                let fields = EntryFields::from_record(&record(seq));
                let h = entry_hash(&prev, seq as u64, &fields);
                let e = StoredEntry {
                    seq,
                    fields,
                    prev_hash: prev.to_vec(),
                    entry_hash: h.to_vec(),
                };
                prev = h;
                e
            })
            .collect()
    }

    fn cp(entries: &[StoredEntry], size: usize) -> Checkpoint {
        Checkpoint {
            origin: "o".into(),
            size: size as u64,
            head_hash: if size == 0 {
                GENESIS_HASH
            } else {
                entries[size - 1].entry_hash.clone().try_into().unwrap()
            },
        }
    }

    #[test]
    fn intact_chain_verifies_with_checkpoints() {
        let c = chain(20);
        let s = verify(c.clone(), vec![cp(&c, 0), cp(&c, 7), cp(&c, 20)]).unwrap();
        assert_eq!(s.size, 20);
        assert_eq!(s.checkpoints, 3);
        assert_eq!(s.head_hash.to_vec(), c[19].entry_hash);
    }

    #[test]
    fn each_kind_of_tampering_names_its_seq() {
        let c = chain(10);
        let mut changed = c.clone();
        changed[4].fields.actor_id.push('x');
        assert_eq!(
            verify(changed, vec![]).unwrap_err(),
            VerifyFailure {
                seq: 5,
                violation: Violation::ContentChanged
            }
        );
        let mut deleted = c.clone();
        deleted.remove(3);
        assert_eq!(verify(deleted, vec![]).unwrap_err().seq, 4);
        let mut swapped = c.clone();
        swapped.swap(2, 5);
        assert_eq!(verify(swapped, vec![]).unwrap_err().seq, 3);
        let truncated: Vec<_> = c[..8].to_vec();
        assert_eq!(
            verify(truncated, vec![cp(&c, 10)]).unwrap_err(),
            VerifyFailure {
                seq: 9,
                violation: Violation::Truncated {
                    checkpoint_size: 10,
                    log_size: 8
                }
            }
        );
        let mut relinked = c.clone();
        relinked[6].prev_hash = vec![1; 32];
        let f = verify(relinked, vec![]).unwrap_err();
        assert_eq!((f.seq, f.violation), (7, Violation::ContentChanged));
    }

    #[test]
    fn rewritten_chain_is_caught_only_by_a_checkpoint() {
        let c = chain(10);
        // An attacker who rewrites entry 4 and recomputes the rest produces a valid chain...
        let mut records: Vec<AuditRecord> = (1..=10).map(record).collect();
        records[3].outcome = Outcome::Deny;
        let mut prev = GENESIS_HASH;
        let forged: Vec<StoredEntry> = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let fields = EntryFields::from_record(r);
                let h = entry_hash(&prev, i as u64 + 1, &fields);
                let e = StoredEntry {
                    seq: i as i64 + 1,
                    fields,
                    prev_hash: prev.to_vec(),
                    entry_hash: h.to_vec(),
                };
                prev = h;
                e
            })
            .collect();
        assert!(verify(forged.clone(), vec![]).is_ok());
        // ...that an earlier checkpoint refuses.
        let f = verify(forged, vec![cp(&c, 6)]).unwrap_err();
        assert_eq!(f.violation, Violation::CheckpointMismatch { size: 6 });
    }

    #[test]
    fn length_prefixes_keep_fields_apart() {
        let mut a = EntryFields::from_record(&record(1));
        let mut b = a.clone();
        a.actor_id = "ab".into();
        a.action = "c".into();
        b.actor_id = "a".into();
        b.action = "bc".into();
        assert_ne!(canonical_bytes(1, &a), canonical_bytes(1, &b));
        let mut c = a.clone();
        let mut d = a.clone();
        c.purpose = None;
        d.purpose = Some(String::new());
        assert_ne!(canonical_bytes(1, &c), canonical_bytes(1, &d));
    }

    #[test]
    fn oversize_and_nul_fields_are_bounded() {
        let mut r = record(1);
        r.actor = Actor::Partner("é".repeat(1000));
        r.person_id = Some("a\0b".into());
        r.resources = (0..1000).map(|i| format!("R/{i}")).collect();
        r.purpose = Some("x".repeat(70 * 1024));
        r.detail = Some(json!({"big": "y".repeat(70 * 1024)}));
        let f = EntryFields::from_record(&r);
        assert!(f.actor_id.len() <= MAX_ID_BYTES);
        assert!(f.actor_id.ends_with("…[truncated 2000 bytes]"));
        assert_eq!(f.person_id.as_deref(), Some("a\u{FFFD}b"));
        let res: Vec<String> = serde_json::from_str(&f.resources).unwrap();
        assert_eq!(res.len(), MAX_RESOURCES);
        assert_eq!(res[MAX_RESOURCES - 1], format!("…[+{} more]", 1000 - 255));
        assert!(f.purpose.as_ref().unwrap().len() <= MAX_PURPOSE_BYTES);
        let detail: Value = serde_json::from_str(f.detail.as_ref().unwrap()).unwrap();
        assert_eq!(detail["truncated"], true);
        assert!(f.to_record().is_some());
    }

    #[test]
    fn signed_checkpoint_round_trip_and_refusals() {
        let pkcs8 = CheckpointSigner::generate_pkcs8().unwrap();
        let signer = CheckpointSigner::from_pkcs8("example.org/audit", &pkcs8).unwrap();
        let verifier = CheckpointVerifier::parse(&signer.verifier().to_vkey()).unwrap();
        let signed = signer.sign(42, [7; 32]);
        assert_eq!(verifier.open(&signed.note).unwrap(), signed.checkpoint);
        // A changed size, a changed hash, a changed signature: refused.
        let bad_size = signed.note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            verifier.open(&bad_size),
            Err(CheckpointError::BadSignature("example.org/audit".into()))
        );
        let mut bad_sig = signed.note.clone().into_bytes();
        let at = bad_sig.len() - 5;
        bad_sig[at] = if bad_sig[at] == b'A' { b'B' } else { b'A' };
        assert!(
            verifier
                .open(std::str::from_utf8(&bad_sig).unwrap())
                .is_err()
        );
        // Another key: no signature of ours.
        let other = CheckpointSigner::from_pkcs8(
            "example.org/audit",
            &CheckpointSigner::generate_pkcs8().unwrap(),
        )
        .unwrap();
        assert_eq!(
            other.verifier().open(&signed.note),
            Err(CheckpointError::NoSignature("example.org/audit".into()))
        );
        // Another origin.
        let elsewhere = CheckpointSigner::from_pkcs8("elsewhere", &pkcs8).unwrap();
        assert!(matches!(
            verifier.open(&elsewhere.sign(1, [0; 32]).note),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        assert!(matches!(
            verifier.open("garbage"),
            Err(CheckpointError::Malformed(_))
        ));
        assert!(CheckpointVerifier::parse("a+00000000+AQ==").is_err());
        assert!(CheckpointSigner::from_pkcs8("bad name", &pkcs8).is_err());
        assert!(CheckpointSigner::from_pkcs8("n", b"not a key").is_err());
    }

    #[test]
    fn fhir_audit_event_of_a_consent_decision() {
        let mut r = record(1);
        r.outcome = Outcome::Deny;
        let e = to_fhir_audit_event(&r);
        assert_eq!(e["type"]["code"], "110113");
        assert_eq!(e["subtype"][0]["code"], "AuthZ-Consent");
        assert_eq!(e["outcome"], "8");
        assert_eq!(e["entity"][0]["what"]["reference"], "Patient/person-1");
        assert_eq!(e["agent"][0]["purposeOfUse"][0]["text"], "treatment");
        let mut s = r.clone();
        s.actor = Actor::Person("w".into());
        s.action = AuditAction::SignIn;
        assert_eq!(to_fhir_audit_event(&s)["subtype"][0]["code"], "110122");
    }

    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
