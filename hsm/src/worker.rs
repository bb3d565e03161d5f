//! HSM worker processes: the same work as a pool thread, in a child process with its own PKCS#11
//! instance.
//!
//! Why: a software token such as SoftHSM2 serialises signatures behind process-wide mutexes, so
//! N threads in one process get less than N times the rate of one; N processes do not share those
//! locks. Whether that gain survives the cost of a pipe round trip per signature is measured by
//! `make bench-hsm`, and the pool's default follows the measurement (see README).
//!
//! The child is a Strongroom binary started with the `strongroom-hsm-worker` protocol on its
//! standard input and output (the `strongroom-hsm-worker` binary of this crate, or the server's
//! hidden `hsm-worker` subcommand). It inherits the environment (SOFTHSM2_CONF, for instance) but
//! never sees the PIN in its arguments or environment: the parent writes it as the first frame on
//! the pipe, and both sides zeroize their copies.
//!
//! Frames are `u32` little-endian length, then the body.
//! - Parent → child, first frame: `module path \0 token label \0 PIN`.
//!   Child → parent: a response frame (empty OK payload, or the error opening the token).
//! - Request: `op u8 (1 sign-digest, 2 decrypt) | alg u8 | id length u8 | id | payload`.
//! - Response: `0 | payload` or `1 | error kind u8 | UTF-8 message`.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::keys::KeyId;
use crate::mechanisms::{DecryptAlg, SignAlg};
use crate::pin::Pin;
use crate::token::Token;

const MAX_FRAME: usize = 1 << 20;

const OP_SIGN: u8 = 1;
const OP_DECRYPT: u8 = 2;

const KIND_KEY_NOT_FOUND: u8 = 1;
const KIND_INVALID_INPUT: u8 = 2;
const KIND_UNSUPPORTED: u8 = 3;
const KIND_BAD_PIN: u8 = 4;
const KIND_OTHER: u8 = 9;

fn sign_alg_code(a: SignAlg) -> u8 {
    match a {
        SignAlg::Ps256 => 1,
        SignAlg::Rs256 => 2,
        SignAlg::Es256 => 3,
    }
}

fn sign_alg_from(c: u8) -> Option<SignAlg> {
    [SignAlg::Ps256, SignAlg::Rs256, SignAlg::Es256]
        .into_iter()
        .find(|a| sign_alg_code(*a) == c)
}

fn decrypt_alg_code(a: DecryptAlg) -> u8 {
    match a {
        DecryptAlg::RsaOaep => 1,
        DecryptAlg::RsaOaep256 => 2,
    }
}

fn decrypt_alg_from(c: u8) -> Option<DecryptAlg> {
    [DecryptAlg::RsaOaep, DecryptAlg::RsaOaep256]
        .into_iter()
        .find(|a| decrypt_alg_code(*a) == c)
}

fn write_frame(w: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut buf = Zeroizing::new(Vec::new());
    push_frame(&mut buf, parts)?;
    w.write_all(&buf)?;
    w.flush()
}

/// Reads one frame; `None` at a clean end of stream.
fn read_frame(r: &mut impl Read) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::other(format!(
            "frame of {len} bytes is too large"
        )));
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    r.read_exact(&mut body)?;
    Ok(Some(body))
}

fn encode_result<T: AsRef<[u8]>>(result: &Result<T>) -> (Vec<u8>, Zeroizing<Vec<u8>>) {
    match result {
        Ok(payload) => (vec![0], Zeroizing::new(payload.as_ref().to_vec())),
        Err(e) => {
            let kind = match e {
                Error::KeyNotFound { .. } => KIND_KEY_NOT_FOUND,
                Error::InvalidInput(_) => KIND_INVALID_INPUT,
                Error::Unsupported { .. } => KIND_UNSUPPORTED,
                Error::BadPin { .. } => KIND_BAD_PIN,
                _ => KIND_OTHER,
            };
            let message = match e {
                Error::KeyNotFound { id, .. } => id.clone(),
                Error::InvalidInput(m) => m.clone(),
                Error::Unsupported { what } => what.clone(),
                other => other.to_string(),
            };
            (vec![1, kind], Zeroizing::new(message.into_bytes()))
        }
    }
}

fn decode_response(body: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    match body {
        [0, payload @ ..] => Ok(Zeroizing::new(payload.to_vec())),
        [1, kind, message @ ..] => {
            let message = String::from_utf8_lossy(message).into_owned();
            Err(match *kind {
                KIND_KEY_NOT_FOUND => Error::KeyNotFound {
                    id: message,
                    class: "private key",
                },
                KIND_INVALID_INPUT => Error::InvalidInput(message),
                KIND_UNSUPPORTED => Error::Unsupported { what: message },
                KIND_BAD_PIN => Error::BadPin {
                    rv: crate::error::RvError::PinIncorrect,
                },
                // What the token said, relayed: not a fault of the process or the pipe.
                _ => Error::Remote(message),
            })
        }
        _ => Err(Error::Worker("malformed response frame".into())),
    }
}

/// The child side: opens the token named in the first frame and serves requests until the parent
/// closes the pipe. Logs go to standard error; standard output carries only frames.
pub fn serve_stdio() -> Result<()> {
    let io_err = |e: std::io::Error| Error::Worker(e.to_string());
    // A buffer of our own, to see whether more requests have already arrived (and to wipe the
    // PIN's frame once read).
    let mut input = FrameReader::new(std::io::stdin());
    let mut output = unbuffered_stdout().map_err(io_err)?;

    let hello = read_frame(&mut input)
        .map_err(io_err)?
        .ok_or_else(|| Error::Worker("no handshake".into()))?;
    let mut fields = hello.splitn(3, |&b| b == 0);
    let (Some(module), Some(label), Some(pin)) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(Error::Worker("malformed handshake".into()));
    };
    let module = PathBuf::from(String::from_utf8_lossy(module).into_owned());
    let label = String::from_utf8_lossy(label).into_owned();
    let pin = Pin::new(&Zeroizing::new(String::from_utf8_lossy(pin).into_owned()));
    let mut session = match Token::open_session_only(&module, &label, pin) {
        Ok(s) => {
            write_frame(&mut output, &[&[0]]).map_err(io_err)?;
            s
        }
        Err(e) => {
            let (head, body) = encode_result::<Vec<u8>>(&Err(e));
            write_frame(&mut output, &[&head, &body]).map_err(io_err)?;
            return Ok(());
        }
    };

    // The parent writes a batch of requests at once; its answers go back at once too, when no
    // further whole request is waiting. An answer per write woke the parent's thread once per
    // signature, and on a machine where both share the cores that wake-up preempted this
    // process in the middle of the batch.
    let mut answers = Zeroizing::new(Vec::new());
    while let Some(req) = read_frame(&mut input).map_err(io_err)? {
        let result = handle(&mut session, &req);
        let (head, body) = encode_result(&result);
        push_frame(&mut answers, &[&head, &body]).map_err(io_err)?;
        if !holds_whole_frame(input.buffered()) {
            output.write_all(&answers).map_err(io_err)?;
            // Answers may be decrypted keys.
            answers.zeroize();
        }
    }
    Ok(())
}

/// Standard output without std's line buffering: answers are binary, and a newline byte in a
/// batch would split its write in two.
#[cfg(unix)]
fn unbuffered_stdout() -> std::io::Result<std::fs::File> {
    use std::os::fd::AsFd;
    Ok(std::io::stdout().as_fd().try_clone_to_owned()?.into())
}

#[cfg(windows)]
fn unbuffered_stdout() -> std::io::Result<std::fs::File> {
    use std::os::windows::io::AsHandle;
    Ok(std::io::stdout().as_handle().try_clone_to_owned()?.into())
}

/// Appends one frame (length, then `parts`) to `buf`.
fn push_frame(buf: &mut Vec<u8>, parts: &[&[u8]]) -> std::io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len).map_err(|_| std::io::Error::other("frame too large"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    for p in parts {
        buf.extend_from_slice(p);
    }
    Ok(())
}

/// A buffered reader that wipes what it has handed out: frames carry the PIN one way and
/// decrypted keys the other, and std's `BufReader` would keep a copy until overwritten.
struct FrameReader<R> {
    inner: R,
    buf: Zeroizing<Vec<u8>>,
    /// `buf[pos..end]` has arrived and not been read yet.
    pos: usize,
    end: usize,
}

impl<R: Read> FrameReader<R> {
    fn new(inner: R) -> Self {
        FrameReader {
            inner,
            buf: Zeroizing::new(vec![0; 1 << 16]),
            pos: 0,
            end: 0,
        }
    }

    /// What has arrived and not been read yet.
    fn buffered(&self) -> &[u8] {
        self.buf.get(self.pos..self.end).unwrap_or_default()
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
            self.end = self.inner.read(&mut self.buf)?;
        }
        let n = self.buffered().len().min(out.len());
        if let (Some(src), Some(dst)) = (self.buf.get(self.pos..self.pos + n), out.get_mut(..n)) {
            dst.copy_from_slice(src);
        }
        self.pos += n;
        if self.pos == self.end
            && let Some(read) = self.buf.get_mut(..self.end)
        {
            read.zeroize();
        }
        Ok(n)
    }
}

/// Whether `buf` starts with a whole frame, so reading it will not wait for the pipe.
fn holds_whole_frame(buf: &[u8]) -> bool {
    match buf.first_chunk::<4>() {
        Some(len) => buf.len() - 4 >= u32::from_le_bytes(*len) as usize,
        None => false,
    }
}

fn handle(session: &mut crate::session::TokenSession, req: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let bad = || Error::Worker("malformed request frame".into());
    let [op, alg, id_len, rest @ ..] = req else {
        return Err(bad());
    };
    let (id, payload) = rest.split_at_checked(*id_len as usize).ok_or_else(bad)?;
    let id = KeyId::new(String::from_utf8_lossy(id).into_owned())?;
    match *op {
        OP_SIGN => {
            let alg = sign_alg_from(*alg).ok_or_else(bad)?;
            let digest: &[u8; 32] = payload.try_into().map_err(|_| bad())?;
            session.sign_digest(&id, alg, digest).map(Zeroizing::new)
        }
        OP_DECRYPT => {
            let alg = decrypt_alg_from(*alg).ok_or_else(bad)?;
            session.decrypt(&id, alg, payload)
        }
        _ => Err(bad()),
    }
}

/// Requests a worker thread sends together, at most.
pub(crate) const MAX_BATCH: usize = 16;

/// One request to a worker process.
pub(crate) enum Request<'a> {
    Sign {
        key: &'a KeyId,
        alg: SignAlg,
        digest: &'a [u8; 32],
    },
    Decrypt {
        key: &'a KeyId,
        alg: DecryptAlg,
        ciphertext: &'a [u8],
    },
}

impl Request<'_> {
    fn encode(&self) -> Vec<u8> {
        let (op, alg, key, payload): (u8, u8, &KeyId, &[u8]) = match self {
            Request::Sign { key, alg, digest } => (OP_SIGN, sign_alg_code(*alg), key, &digest[..]),
            Request::Decrypt {
                key,
                alg,
                ciphertext,
            } => (OP_DECRYPT, decrypt_alg_code(*alg), key, ciphertext),
        };
        // KeyId is at most 64 ASCII bytes, so its length fits the u8.
        let id = key.as_str().as_bytes();
        let mut body = Vec::with_capacity(3 + id.len() + payload.len());
        body.extend_from_slice(&[op, alg, id.len() as u8]);
        body.extend_from_slice(id);
        body.extend_from_slice(payload);
        body
    }
}

/// The parent side of one worker process.
pub(crate) struct WorkerProcess {
    child: Child,
    /// `None` once closed, which tells the child to exit.
    stdin: Option<ChildStdin>,
    /// Buffered: the answers to a batch arrive in one write, and are read in one call.
    stdout: FrameReader<ChildStdout>,
}

impl WorkerProcess {
    /// Starts `program args…`, hands it module, label and PIN, and waits until it has opened the
    /// token.
    pub(crate) fn spawn(
        program: &Path,
        args: &[String],
        module: &Path,
        label: &str,
        pin: &Pin,
    ) -> Result<Self> {
        let mut command = Command::new(program);
        // The PIN travels over the pipe only: drop any environment variable that holds it
        // (STRONGROOM_HSM_PIN, or whichever variable the operator chose).
        let pin_bytes = pin.expose_bytes();
        for (name, value) in std::env::vars_os() {
            if value.as_encoded_bytes() == pin_bytes.as_slice() {
                command.env_remove(name);
            }
        }
        let mut child = command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::Worker(format!("cannot start {}: {e}", program.display())))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(Error::Worker("worker has no pipes".into()));
        };
        let mut w = WorkerProcess {
            child,
            stdin: Some(stdin),
            stdout: FrameReader::new(stdout),
        };
        let module_bytes = module.to_string_lossy().into_owned().into_bytes();
        w.write(&[&module_bytes, &[0], label.as_bytes(), &[0], &pin_bytes])?;
        let reply = read_frame(&mut w.stdout)
            .map_err(|e| Error::Worker(format!("handshake: {e}")))?
            .ok_or_else(|| Error::Worker("worker exited during start-up".into()))?;
        decode_response(&reply)?;
        Ok(w)
    }

    fn write(&mut self, parts: &[&[u8]]) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or(Error::PoolClosed)?;
        write_frame(stdin, parts).map_err(|e| Error::Worker(format!("write: {e}")))
    }

    /// Sends every request in one write, then reads the answers in order. Pipelining keeps the
    /// child busy while the parent's thread is waiting to be scheduled: one request at a time
    /// cost a pipe round trip (~150 µs on a 2-core VM) per signature.
    ///
    /// Deadlock-free as long as a batch's requests and answers each fit the pipe buffers
    /// (64 KiB on Linux); [`MAX_BATCH`] requests of at most a 4096-bit ciphertext stay far below.
    pub(crate) fn call_batch(
        &mut self,
        requests: &[Request<'_>],
    ) -> Vec<Result<Zeroizing<Vec<u8>>>> {
        let mut out = Vec::with_capacity(requests.len());
        let mut buf = Zeroizing::new(Vec::new());
        for r in requests {
            let body = r.encode();
            match u32::try_from(body.len()) {
                Ok(len) if (len as usize) <= MAX_FRAME => {
                    buf.extend_from_slice(&len.to_le_bytes());
                    buf.extend_from_slice(&body);
                }
                _ => {
                    return requests
                        .iter()
                        .map(|_| Err(Error::InvalidInput("request too large".into())))
                        .collect();
                }
            }
        }
        let written = match self.stdin.as_mut() {
            Some(stdin) => stdin
                .write_all(&buf)
                .and_then(|()| stdin.flush())
                .map_err(|e| Error::Worker(format!("write: {e}"))),
            None => Err(Error::PoolClosed),
        };
        if let Err(e) = written {
            let msg = e.to_string();
            return requests
                .iter()
                .map(|_| Err(Error::Worker(msg.clone())))
                .collect();
        }
        for _ in requests {
            let answer = match read_frame(&mut self.stdout) {
                Ok(Some(body)) => decode_response(&body),
                Ok(None) => Err(Error::Worker("worker process exited".into())),
                Err(e) => Err(Error::Worker(format!("read: {e}"))),
            };
            out.push(answer);
        }
        out
    }

    /// True once the child has exited.
    pub(crate) fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        // Closing stdin ends the child's loop; then reap it. Kill it if it does not go.
        self.stdin = None;
        for _ in 0..50 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversize() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &[b"ab", b"c"]).unwrap();
        assert_eq!(&buf[..4], &3u32.to_le_bytes());
        let mut r = &buf[..];
        assert_eq!(read_frame(&mut r).unwrap().unwrap().as_slice(), b"abc");
        assert!(read_frame(&mut r).unwrap().is_none());
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read_frame(&mut &huge[..]).is_err());
    }

    #[test]
    fn answers_wait_only_for_requests_already_whole_in_the_buffer() {
        let mut two = Vec::new();
        push_frame(&mut two, &[b"abc"]).unwrap();
        push_frame(&mut two, &[b""]).unwrap();
        assert!(holds_whole_frame(&two));
        assert!(holds_whole_frame(&two[7..]), "an empty frame is whole");
        // Nothing, part of a length, or part of a body: reading would wait for the pipe, so the
        // answers so far must go first.
        assert!(!holds_whole_frame(&[]));
        assert!(!holds_whole_frame(&two[..3]));
        assert!(!holds_whole_frame(&two[..6]));
    }

    #[test]
    fn the_frame_reader_wipes_what_it_has_handed_out() {
        let mut wire = Vec::new();
        push_frame(&mut wire, &[b"secret key"]).unwrap();
        push_frame(&mut wire, &[b"next"]).unwrap();
        let mut r = FrameReader::new(&wire[..]);
        assert_eq!(
            read_frame(&mut r).unwrap().unwrap().as_slice(),
            b"secret key"
        );
        assert!(holds_whole_frame(r.buffered()));
        assert_eq!(read_frame(&mut r).unwrap().unwrap().as_slice(), b"next");
        assert!(r.buffered().is_empty());
        assert!(
            r.buf.iter().all(|&b| b == 0),
            "read bytes left in the buffer"
        );
        assert!(read_frame(&mut r).unwrap().is_none());
    }

    #[test]
    fn errors_keep_their_kind_across_the_pipe() {
        for e in [
            Error::KeyNotFound {
                id: "k".into(),
                class: "private key",
            },
            Error::InvalidInput("x".into()),
            Error::Unsupported {
                what: "RSA-OAEP-256".into(),
            },
        ] {
            let want = std::mem::discriminant(&e);
            let (head, body) = encode_result::<Vec<u8>>(&Err(e));
            let got = decode_response(&[head, body.to_vec()].concat()).unwrap_err();
            assert_eq!(std::mem::discriminant(&got), want);
        }
        assert!(matches!(decode_response(&[7]), Err(Error::Worker(_))));
        assert!(matches!(decode_response(&[]), Err(Error::Worker(_))));
    }
}
