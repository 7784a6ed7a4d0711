//! Entry points shared by the fuzz targets (`card-agent/fuzz/`) and the in-tree random-input test.
//!
//! Each takes arbitrary bytes and must neither panic nor loop without bound.

use crate::agent;
use crate::apdu::{Command, Response};
use crate::pin::{JpkiAuthPin, LastTry};
use crate::transport::{CardTransport, TransportError};

/// A card whose answers are cut from fuzz input: each answer is a 1-byte length and that many bytes.
struct FuzzCard<'a> {
    input: &'a [u8],
    sent: usize,
}

impl CardTransport for FuzzCard<'_> {
    fn transmit(&mut self, _apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.sent += 1;
        let Some((&len, rest)) = self.input.split_first() else {
            return Err(TransportError::CardRemoved);
        };
        let len = (len as usize).min(rest.len());
        let (answer, rest) = rest.split_at(len);
        self.input = rest;
        Ok(answer.to_vec())
    }
}

/// Response parsing and the whole JPKI client (status, sign) against a card answering `data`.
///
/// Returns the number of APDUs the client sent (bounded by the input length plus a constant).
pub fn card_responses(data: &[u8]) -> usize {
    let _ = Response::parse(data);
    let _ = Command::parse(data);
    let mut card = FuzzCard {
        input: data,
        sent: 0,
    };
    let _ = agent::read_card_info(&mut card);
    let status_apdus = card.sent;
    let mut card = FuzzCard {
        input: data,
        sent: 0,
    };
    if let Ok(pin) = JpkiAuthPin::parse("1234") {
        let _ = agent::sign_challenge(&mut card, &pin, LastTry::Confirmed, b"fuzz", None);
    }
    status_apdus + card.sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn random_card_answers_never_panic_and_stay_bounded() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x1BB2);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..600);
            let mut data: Vec<u8> = (0..len).map(|_| rng.r#gen()).collect();
            // Bias towards well-formed status words so the deeper paths are reached.
            for chunk in data.chunks_mut(7) {
                if chunk.len() == 7 && rng.gen_bool(0.5) {
                    chunk[0] = 2;
                    chunk[1] = [0x90, 0x61, 0x6C, 0x63, 0x62][rng.gen_range(0..5)];
                }
            }
            let sent = card_responses(&data);
            // Every APDU consumes at least one input byte, so the client cannot loop forever.
            assert!(
                sent <= 2 * (data.len() + 2),
                "{sent} APDUs for {} bytes",
                data.len()
            );
        }
    }
}
