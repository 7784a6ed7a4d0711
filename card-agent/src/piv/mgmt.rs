//! The PIV Card Application Administration Key (slot `9B`), NIST SP 800-73-4 Part 2 §3.2.4
//! (GENERAL AUTHENTICATE, mutual authentication with witness and challenge) and SP 800-78-4
//! Table 6-1 (algorithm `03` = 3-key 3DES, `0C` = AES-256). Setting a new key uses Yubico's
//! `SET MANAGEMENT KEY` (`00 FF FF FF`, data `alg 9B len key`), which YubiKeys and Nitrokey's
//! piv-authenticator implement; SP 800-73-4 leaves key replacement to the card management system.

use aes::Aes256;
use des::TdesEde3;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// SP 800-78-4 algorithm identifier of 3-key Triple-DES.
pub const ALG_3DES: u8 = 0x03;
/// SP 800-78-4 algorithm identifier of AES-256.
pub const ALG_AES256: u8 = 0x0C;

/// The factory-default 3DES management key of PIV test cards and YubiKeys: `010203…0708` × 3.
pub const DEFAULT_3DES_KEY: [u8; 24] = [
    1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8,
];

/// A management key. Zeroized on drop; `Debug` shows only the algorithm.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub enum ManagementKey {
    /// 3-key Triple-DES (24 bytes).
    Tdes([u8; 24]),
    /// AES-256 (32 bytes).
    Aes256([u8; 32]),
}

impl std::fmt::Debug for ManagementKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManagementKey({:#04x}, <redacted>)", self.algorithm())
    }
}

/// A management key of the wrong length or algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "management key: algorithm {alg:#04x} with {len} bytes is not supported (3DES 24, AES-256 32)"
)]
pub struct BadManagementKey {
    /// Algorithm.
    pub alg: u8,
    /// Key length given.
    pub len: usize,
}

impl ManagementKey {
    /// The factory default (3DES `010203…08` × 3).
    pub fn factory_default() -> Self {
        ManagementKey::Tdes(DEFAULT_3DES_KEY)
    }

    /// A fresh random key of the given algorithm.
    pub fn random(alg: u8) -> Result<Self, BadManagementKey> {
        use rand::RngCore;
        let mut rng = rand::rngs::OsRng;
        match alg {
            ALG_3DES => {
                let mut k = [0u8; 24];
                rng.fill_bytes(&mut k);
                Ok(ManagementKey::Tdes(k))
            }
            ALG_AES256 => {
                let mut k = [0u8; 32];
                rng.fill_bytes(&mut k);
                Ok(ManagementKey::Aes256(k))
            }
            _ => Err(BadManagementKey { alg, len: 0 }),
        }
    }

    /// From an algorithm identifier and key bytes.
    pub fn from_parts(alg: u8, key: &[u8]) -> Result<Self, BadManagementKey> {
        let bad = BadManagementKey {
            alg,
            len: key.len(),
        };
        match alg {
            ALG_3DES => Ok(ManagementKey::Tdes(key.try_into().map_err(|_| bad)?)),
            ALG_AES256 => Ok(ManagementKey::Aes256(key.try_into().map_err(|_| bad)?)),
            _ => Err(bad),
        }
    }

    /// SP 800-78-4 algorithm identifier.
    pub fn algorithm(&self) -> u8 {
        match self {
            ManagementKey::Tdes(_) => ALG_3DES,
            ManagementKey::Aes256(_) => ALG_AES256,
        }
    }

    /// The key bytes (for storing it in the PIN-protected object at issuance).
    pub fn bytes(&self) -> &[u8] {
        match self {
            ManagementKey::Tdes(k) => k,
            ManagementKey::Aes256(k) => k,
        }
    }

    /// Block size of the cipher: witnesses and challenges are one block.
    pub fn block_len(&self) -> usize {
        match self {
            ManagementKey::Tdes(_) => 8,
            ManagementKey::Aes256(_) => 16,
        }
    }

    /// Encrypts one block (ECB, as GENERAL AUTHENTICATE does). `None` if `block` is not one block.
    pub fn encrypt_block(&self, block: &[u8]) -> Option<Vec<u8>> {
        if block.len() != self.block_len() {
            return None;
        }
        let mut b = block.to_vec();
        match self {
            ManagementKey::Tdes(k) => {
                TdesEde3::new(GenericArray::from_slice(k))
                    .encrypt_block(GenericArray::from_mut_slice(&mut b));
            }
            ManagementKey::Aes256(k) => {
                Aes256::new(GenericArray::from_slice(k))
                    .encrypt_block(GenericArray::from_mut_slice(&mut b));
            }
        }
        Some(b)
    }

    /// Decrypts one block. `None` if `block` is not one block.
    pub fn decrypt_block(&self, block: &[u8]) -> Option<Vec<u8>> {
        if block.len() != self.block_len() {
            return None;
        }
        let mut b = block.to_vec();
        match self {
            ManagementKey::Tdes(k) => {
                TdesEde3::new(GenericArray::from_slice(k))
                    .decrypt_block(GenericArray::from_mut_slice(&mut b));
            }
            ManagementKey::Aes256(k) => {
                Aes256::new(GenericArray::from_slice(k))
                    .decrypt_block(GenericArray::from_mut_slice(&mut b));
            }
        }
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_debug_hides_the_key() {
        for key in [
            ManagementKey::factory_default(),
            ManagementKey::random(ALG_AES256).unwrap(),
        ] {
            let block = vec![0x5A; key.block_len()];
            let enc = key.encrypt_block(&block).unwrap();
            assert_ne!(enc, block);
            assert_eq!(key.decrypt_block(&enc).unwrap(), block);
            assert!(key.encrypt_block(&[0; 5]).is_none());
            assert!(!format!("{key:?}").contains("01, 02"));
        }
        // Known answer: 3DES with K1=K2=K3 is single DES; FIPS 81 / SP 800-17 vector.
        let k = ManagementKey::Tdes(
            [[0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]; 3]
                .concat()
                .try_into()
                .unwrap(),
        );
        let enc = k
            .encrypt_block(&[0x4E, 0x6F, 0x77, 0x20, 0x69, 0x73, 0x20, 0x74])
            .unwrap();
        assert_eq!(enc, [0x3F, 0xA4, 0x0E, 0x8A, 0x98, 0x4D, 0x48, 0x15]);
    }
}
