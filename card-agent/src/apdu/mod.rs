//! ISO/IEC 7816-4 APDU framing, without I/O.
//!
//! [`exchange`] is the one place that handles transport-level status words: `61xx` (GET RESPONSE,
//! §5.3.4 / §11.5.3), `6Cxx` (re-send with the exact Le, §5.1.3) and command chaining for data
//! fields longer than a short APDU (§5.4.1). Card applications call it and only ever see the
//! final response.

mod command;
mod response;

pub use command::{
    CLA_CHAINING, Command, EXTENDED_MAX_LC, EXTENDED_MAX_LE, EncodeError, LengthMode, ParseError,
    SHORT_MAX_LC, SHORT_MAX_LE, ins,
};
pub use response::{Response, ResponseTooShort, Status, StatusWord};

use crate::transport::{CardTransport, TransportError};
use zeroize::Zeroizing;

/// GET RESPONSE rounds allowed for one command (256 × 256 bytes = 64 KiB, more than any object).
pub const MAX_GET_RESPONSE_ROUNDS: usize = 256;

/// Why an exchange produced no final response.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The transport failed (reader, socket, card removed).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The card answered with fewer than the two status bytes.
    #[error(transparent)]
    TooShort(#[from] ResponseTooShort),
    /// The command cannot be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The card kept answering `61xx` beyond [`MAX_GET_RESPONSE_ROUNDS`].
    #[error("card asked for more than {MAX_GET_RESPONSE_ROUNDS} GET RESPONSE rounds")]
    EndlessResponse,
}

/// Sends `command` and returns the card's final response.
///
/// - Data longer than a short APDU is chained (CLA bit `10`) unless the transport takes extended
///   length; a chain link answered with anything but `9000` ends the exchange with that response.
/// - `6Cxx` re-sends the command once with Le = xx, but only for commands that expect data (a
///   command without Le, such as VERIFY, is never sent twice).
/// - `61xx` is followed by GET RESPONSE until the card has given everything.
pub fn exchange<T: CardTransport + ?Sized>(
    transport: &mut T,
    command: &Command,
) -> Result<Response, ExchangeError> {
    let extended = transport.supports_extended_length() && !command.fits_short();
    let mut response = if !extended && command.data().len() > SHORT_MAX_LC {
        match send_chained(transport, command)? {
            Ok(last) => last,
            Err(refused) => return Ok(refused),
        }
    } else {
        let mode = if extended {
            LengthMode::Extended
        } else {
            LengthMode::Short
        };
        transmit_one(transport, command, mode)?
    };

    if let Status::WrongLe(le) = response.sw.meaning()
        && command.le().is_some()
    {
        let mode = if extended {
            LengthMode::Extended
        } else {
            LengthMode::Short
        };
        response = transmit_one(transport, &command.resend_with_le(le), mode)?;
    }

    collect_more_data(transport, response)
}

/// Sends the chain links; `Ok(Err(r))` is a link the card refused.
fn send_chained<T: CardTransport + ?Sized>(
    transport: &mut T,
    command: &Command,
) -> Result<Result<Response, Response>, ExchangeError> {
    let chunks: Vec<&[u8]> = command.data().chunks(SHORT_MAX_LC).collect();
    let last_index = chunks.len() - 1;
    for (i, chunk) in chunks.into_iter().enumerate() {
        let is_last = i == last_index;
        let cla = if is_last {
            command.cla
        } else {
            command.cla | CLA_CHAINING
        };
        let mut link = Command::new(cla, command.ins, command.p1, command.p2).with_data(chunk);
        if command.is_sensitive() {
            link = link.sensitive();
        }
        if is_last && let Some(le) = command.le() {
            link = link.with_le(le.min(SHORT_MAX_LE));
        }
        let response = transmit_one(transport, &link, LengthMode::Short)?;
        if is_last {
            return Ok(Ok(response));
        }
        if !response.is_ok() {
            return Ok(Err(response));
        }
    }
    unreachable!("a chain has at least one link: data is longer than one short APDU")
}

fn collect_more_data<T: CardTransport + ?Sized>(
    transport: &mut T,
    mut response: Response,
) -> Result<Response, ExchangeError> {
    let mut rounds = 0;
    while let Status::MoreData(available) = response.sw.meaning() {
        rounds += 1;
        if rounds > MAX_GET_RESPONSE_ROUNDS {
            return Err(ExchangeError::EndlessResponse);
        }
        let get_response = Command::new(0x00, ins::GET_RESPONSE, 0x00, 0x00).with_le(available);
        let mut next = transmit_one(transport, &get_response, LengthMode::Short)?;
        if let Status::WrongLe(le) = next.sw.meaning() {
            next = transmit_one(
                transport,
                &get_response.resend_with_le(le),
                LengthMode::Short,
            )?;
        }
        response.data.extend_from_slice(&next.data);
        response.sw = next.sw;
    }
    Ok(response)
}

fn transmit_one<T: CardTransport + ?Sized>(
    transport: &mut T,
    command: &Command,
    mode: LengthMode,
) -> Result<Response, ExchangeError> {
    let bytes = Zeroizing::new(command.to_bytes(mode)?);
    tracing::trace!(apdu = ?command, "C-APDU");
    let raw = transport.transmit(&bytes)?;
    let response = Response::parse(&raw)?;
    tracing::trace!(sw = %response.sw, len = response.data.len(), "R-APDU");
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// Replays scripted responses and records what was sent.
    struct Script {
        replies: VecDeque<Vec<u8>>,
        sent: Vec<Vec<u8>>,
        extended: bool,
    }

    impl Script {
        fn new(replies: &[&[u8]]) -> Self {
            Script {
                replies: replies.iter().map(|r| r.to_vec()).collect(),
                sent: Vec::new(),
                extended: false,
            }
        }
    }

    impl CardTransport for Script {
        fn transmit(&mut self, apdu: &[u8]) -> Result<Vec<u8>, TransportError> {
            self.sent.push(apdu.to_vec());
            self.replies.pop_front().ok_or(TransportError::CardRemoved)
        }
        fn supports_extended_length(&self) -> bool {
            self.extended
        }
    }

    #[test]
    fn get_response_collects_all_data() {
        let mut t = Script::new(&[
            &[1, 2, 0x61, 0x03],
            &[3, 4, 5, 0x61, 0x00],
            &[6, 0x90, 0x00],
        ]);
        let cmd = Command::new(0x80, 0x2A, 0x00, 0x80)
            .with_data([9; 4])
            .with_le(256);
        let r = exchange(&mut t, &cmd).unwrap();
        assert_eq!(r.data, [1, 2, 3, 4, 5, 6]);
        assert!(r.is_ok());
        assert_eq!(t.sent[1], [0x00, 0xC0, 0x00, 0x00, 0x03]);
        assert_eq!(t.sent[2], [0x00, 0xC0, 0x00, 0x00, 0x00]);
    }

    #[test]
    fn wrong_le_resends_once_with_the_exact_le() {
        let mut t = Script::new(&[&[0x6C, 0x07], &[1, 2, 3, 4, 5, 6, 7, 0x90, 0x00]]);
        let cmd = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(256);
        let r = exchange(&mut t, &cmd).unwrap();
        assert_eq!(r.data.len(), 7);
        assert_eq!(t.sent, vec![vec![0, 0xB0, 0, 0, 0], vec![0, 0xB0, 0, 0, 7]]);
    }

    #[test]
    fn wrong_le_is_not_resent_for_a_command_without_le() {
        let mut t = Script::new(&[&[0x6C, 0x04]]);
        let verify = Command::new(0x00, 0x20, 0x00, 0x80)
            .with_data(*b"1234")
            .sensitive();
        let r = exchange(&mut t, &verify).unwrap();
        assert_eq!(r.sw, StatusWord(0x6C04));
        assert_eq!(t.sent.len(), 1, "a VERIFY must never be sent twice");
    }

    #[test]
    fn long_data_is_chained_in_short_mode() {
        let mut t = Script::new(&[&[0x90, 0x00], &[0x90, 0x00]]);
        let data: Vec<u8> = (0..300u16).map(|i| i as u8).collect();
        let cmd = Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(data.clone());
        exchange(&mut t, &cmd).unwrap();
        assert_eq!(t.sent.len(), 2);
        assert_eq!(&t.sent[0][..5], &[0x10, 0xDB, 0x3F, 0xFF, 255]);
        assert_eq!(&t.sent[1][..5], &[0x00, 0xDB, 0x3F, 0xFF, 45]);
        let rejoined: Vec<u8> = [&t.sent[0][5..], &t.sent[1][5..]].concat();
        assert_eq!(rejoined, data);
    }

    #[test]
    fn a_refused_chain_link_stops_the_chain() {
        let mut t = Script::new(&[&[0x68, 0x84]]);
        let cmd = Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(vec![0; 600]);
        let r = exchange(&mut t, &cmd).unwrap();
        assert_eq!(r.sw, StatusWord::CHAINING_NOT_SUPPORTED);
        assert_eq!(t.sent.len(), 1);
    }

    #[test]
    fn extended_transport_sends_one_apdu() {
        let mut t = Script::new(&[&[0x90, 0x00]]);
        t.extended = true;
        let cmd = Command::new(0x00, 0xDB, 0x3F, 0xFF).with_data(vec![0; 600]);
        exchange(&mut t, &cmd).unwrap();
        assert_eq!(t.sent.len(), 1);
        assert_eq!(&t.sent[0][4..7], &[0x00, 0x02, 0x58]);
    }

    #[test]
    fn short_or_missing_responses_are_errors() {
        let cmd = Command::new(0x00, 0xA4, 0x04, 0x0C).with_data([1, 2]);
        let mut t = Script::new(&[&[]]);
        assert!(matches!(
            exchange(&mut t, &cmd),
            Err(ExchangeError::TooShort(_))
        ));
        let mut t = Script::new(&[&[0x90]]);
        assert!(matches!(
            exchange(&mut t, &cmd),
            Err(ExchangeError::TooShort(_))
        ));
        let mut t = Script::new(&[]);
        assert!(matches!(
            exchange(&mut t, &cmd),
            Err(ExchangeError::Transport(TransportError::CardRemoved))
        ));
    }

    #[test]
    fn endless_more_data_is_bounded() {
        let replies: Vec<&[u8]> = vec![&[0xAA, 0x61, 0x01]; MAX_GET_RESPONSE_ROUNDS + 2];
        let mut t = Script::new(&replies);
        let cmd = Command::new(0x00, 0xB0, 0x00, 0x00).with_le(1);
        assert!(matches!(
            exchange(&mut t, &cmd),
            Err(ExchangeError::EndlessResponse)
        ));
    }
}
