//! Serves Nitrokey's `piv-authenticator` (NIST SP 800-73-4 PIV, with Yubico's extensions) to
//! vsmartcard's vpcd: `piv-authenticator-vpcd [PORT] [STATE_DIR]`.
//!
//! vpcd framing (vsmartcard `vpcd.c`): 2-byte big-endian length + payload both ways; a 1-byte
//! payload is control (`00` off, `01` on, `02` reset, `04` ATR). This runner adds what a card's
//! ISO 7816-4 transport layer does around the application: command chaining (§5.4.1) and
//! `61xx` / GET RESPONSE for answers over 256 bytes (§5.3.4).
//!
//! Trussed runs in its software (`virt`) platform with the Nitrokey staging and auth backends.
//! With STATE_DIR its flash is kept in files there (a card that survives restarts); without, RAM.

use std::io::{Read, Write};
use std::net::TcpStream;

use trussed::backend::BackendId;
use trussed::serde_extensions::{ExtensionDispatch, ExtensionId, ExtensionImpl};
use trussed::service::ServiceResources;
use trussed::types::{Context, CoreContext};
use trussed_core::types::Location;
use trussed::virt::{self, StorageConfig, StoreConfig};
use trussed::Platform;
use trussed_auth::AuthExtension;
use trussed_auth_backend::{AuthBackend, AuthContext, FilesystemLayout};
use trussed_chunked::ChunkedExtension;
use trussed_core::api::{reply, request, Reply, Request};
use trussed_core::Error;
use trussed_hpke::HpkeExtension;
use trussed_staging::{StagingBackend, StagingContext};
use trussed_wrap_key_to_file::WrapKeyToFileExtension;

const ATR: [u8; 12] = [
    0x3B, 0x88, 0x80, 0x01, 0x50, 0x49, 0x56, 0x2D, 0x4E, 0x4B, 0x00, 0x00,
];
const MAX_COMMAND: usize = 7_800;
const MAX_REPLY: usize = 7_800;

struct Dispatcher {
    staging: StagingBackend,
    auth: AuthBackend,
}

enum Backends {
    Staging,
    Auth,
}

#[derive(Default)]
struct Ctx {
    staging: StagingContext,
    auth: AuthContext,
}

enum Extensions {
    Chunked,
    WrapKeyToFile,
    Hpke,
    Auth,
}

impl From<Extensions> for u8 {
    fn from(e: Extensions) -> u8 {
        match e {
            Extensions::Chunked => 0,
            Extensions::WrapKeyToFile => 1,
            Extensions::Hpke => 2,
            Extensions::Auth => 3,
        }
    }
}

impl TryFrom<u8> for Extensions {
    type Error = Error;
    fn try_from(v: u8) -> Result<Self, Error> {
        Ok(match v {
            0 => Extensions::Chunked,
            1 => Extensions::WrapKeyToFile,
            2 => Extensions::Hpke,
            3 => Extensions::Auth,
            _ => return Err(Error::FunctionNotSupported),
        })
    }
}

impl ExtensionId<ChunkedExtension> for Dispatcher {
    type Id = Extensions;
    const ID: Extensions = Extensions::Chunked;
}
impl ExtensionId<WrapKeyToFileExtension> for Dispatcher {
    type Id = Extensions;
    const ID: Extensions = Extensions::WrapKeyToFile;
}
impl ExtensionId<HpkeExtension> for Dispatcher {
    type Id = Extensions;
    const ID: Extensions = Extensions::Hpke;
}
impl ExtensionId<AuthExtension> for Dispatcher {
    type Id = Extensions;
    const ID: Extensions = Extensions::Auth;
}

impl ExtensionDispatch for Dispatcher {
    type BackendId = Backends;
    type Context = Ctx;
    type ExtensionId = Extensions;

    fn core_request<P: Platform>(
        &mut self,
        backend: &Backends,
        ctx: &mut Context<Ctx>,
        request: &Request,
        resources: &mut ServiceResources<P>,
    ) -> Result<Reply, Error> {
        match backend {
            Backends::Staging => {
                trussed::backend::Backend::request(
                    &mut self.staging,
                    &mut ctx.core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            Backends::Auth => Err(Error::RequestNotAvailable),
        }
    }

    fn extension_request<P: Platform>(
        &mut self,
        backend: &Backends,
        extension: &Extensions,
        ctx: &mut Context<Ctx>,
        request: &request::SerdeExtension,
        resources: &mut ServiceResources<P>,
    ) -> Result<reply::SerdeExtension, Error> {
        let core: &mut CoreContext = &mut ctx.core;
        match (backend, extension) {
            (Backends::Auth, Extensions::Auth) => {
                ExtensionImpl::<AuthExtension>::extension_request_serialized(
                    &mut self.auth,
                    core,
                    &mut ctx.backends.auth,
                    request,
                    resources,
                )
            }
            (Backends::Staging, Extensions::Chunked) => {
                ExtensionImpl::<ChunkedExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (Backends::Staging, Extensions::WrapKeyToFile) => {
                ExtensionImpl::<WrapKeyToFileExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            (Backends::Staging, Extensions::Hpke) => {
                ExtensionImpl::<HpkeExtension>::extension_request_serialized(
                    &mut self.staging,
                    core,
                    &mut ctx.backends.staging,
                    request,
                    resources,
                )
            }
            _ => Err(Error::RequestNotAvailable),
        }
    }
}

fn storage(dir: Option<&std::path::Path>, name: &str) -> StorageConfig<'static> {
    match dir {
        Some(dir) => StorageConfig::filesystem(dir.join(name)),
        None => StorageConfig::ram(),
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = args
        .next()
        .map(|p| p.parse().unwrap_or_else(|_| fail(&format!("bad port {p:?}"))))
        .unwrap_or(35963);
    let state_dir = args.next().map(std::path::PathBuf::from);
    if let Some(dir) = &state_dir {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{}: {e}", dir.display())));
    }
    let store = StoreConfig {
        internal: storage(state_dir.as_deref(), "internal.bin"),
        external: storage(state_dir.as_deref(), "external.bin"),
        volatile: StorageConfig::ram(),
    };
    let stream = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| fail(&format!("cannot reach vpcd on port {port}: {e}")));
    let _ = stream.set_nodelay(true);
    eprintln!("piv-authenticator-vpcd: card inserted on vpcd port {port}");
    let dispatcher = Dispatcher {
        staging: StagingBackend::new(),
        auth: AuthBackend::new(Location::Internal, FilesystemLayout::V1),
    };
    static BACKENDS: &[BackendId<Backends>] = &[
        BackendId::Custom(Backends::Auth),
        BackendId::Custom(Backends::Staging),
        BackendId::Core,
    ];
    virt::with_platform(store, |platform| {
        platform.run_client_with_backends("piv", dispatcher, BACKENDS, |client| {
            let mut card =
                piv_authenticator::Authenticator::new(client, piv_authenticator::Options::default());
            if let Err(e) = serve(&mut card, stream) {
                eprintln!("piv-authenticator-vpcd: {e}");
            }
        })
    });
}

fn fail(msg: &str) -> ! {
    eprintln!("piv-authenticator-vpcd: {msg}");
    std::process::exit(2)
}

fn serve<T: piv_authenticator::Client>(
    card: &mut piv_authenticator::Authenticator<T>,
    mut stream: TcpStream,
) -> std::io::Result<()> {
    let mut chain: Option<iso7816::Command<MAX_COMMAND>> = None;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return Ok(());
        }
        let mut payload = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut payload).is_err() {
            return Ok(());
        }
        let reply: Vec<u8> = match payload.as_slice() {
            [] => return Ok(()),
            [0x00] | [0x01] | [0x02] => {
                chain = None;
                pending.clear();
                card.deselect();
                continue;
            }
            [0x04] => ATR.to_vec(),
            [_] => continue,
            apdu => process(card, apdu, &mut chain, &mut pending),
        };
        let mut message = (reply.len() as u16).to_be_bytes().to_vec();
        message.extend_from_slice(&reply);
        stream.write_all(&message)?;
    }
}

fn sw(data: &[u8], sw: u16) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(&sw.to_be_bytes());
    out
}

/// Answers at most Le (256 for short APDUs) bytes, keeping the rest for GET RESPONSE.
fn give(pending: &mut Vec<u8>, le: usize) -> Vec<u8> {
    let le = if le == 0 { 256 } else { le };
    let n = pending.len().min(le);
    let head: Vec<u8> = pending.drain(..n).collect();
    match pending.len() {
        0 => sw(&head, 0x9000),
        rest if rest >= 256 => sw(&head, 0x6100),
        rest => sw(&head, 0x6100 | rest as u16),
    }
}

fn process<T: piv_authenticator::Client>(
    card: &mut piv_authenticator::Authenticator<T>,
    apdu: &[u8],
    chain: &mut Option<iso7816::Command<MAX_COMMAND>>,
    pending: &mut Vec<u8>,
) -> Vec<u8> {
    let command = match iso7816::command::CommandView::try_from(apdu) {
        Ok(c) => c,
        Err(_) => return sw(&[], 0x6700),
    };
    // GET RESPONSE continues the last long answer.
    if apdu.len() >= 2 && apdu[1] == 0xC0 {
        if pending.is_empty() {
            return sw(&[], 0x6985);
        }
        return give(pending, command.expected());
    }
    pending.clear();
    let extended = apdu.len() > 5 && apdu[4] == 0 && apdu.len() > 7;
    if command.class().chain().not_the_last() {
        let acc = match chain.take() {
            Some(mut acc) => acc.extend_from_command_view(command).map(|()| acc).map_err(|_| ()),
            None => command.to_owned().map_err(|_| ()),
        };
        match acc {
            Ok(acc) => *chain = Some(acc),
            Err(_) => return sw(&[], 0x6A84),
        }
        return sw(&[], 0x9000);
    }
    let full: iso7816::Command<MAX_COMMAND> = match chain.take() {
        Some(mut acc) => {
            if acc.extend_from_command_view(command).is_err() {
                return sw(&[], 0x6A84);
            }
            acc
        }
        None => match command.to_owned() {
            Ok(c) => c,
            Err(_) => return sw(&[], 0x6A84),
        },
    };
    let mut reply = heapless::Vec::<u8, MAX_REPLY>::new();
    let result = card.respond(full.as_view(), &mut reply);
    match result {
        Ok(()) => {
            *pending = reply.to_vec();
            let le = if extended { pending.len() } else { 256 };
            give(pending, le)
        }
        Err(status) => {
            let code: u16 = status.into();
            sw(&[], code)
        }
    }
}
