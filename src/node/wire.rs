//! `Wire`: how a message becomes bytes plus file descriptors, and back.
//!
//! # Design
//!
//! A value is encoded into an [`Encoder`]: a byte buffer and a list of
//! owned file descriptors. An `OwnedFd` inside a value moves into that list
//! and the bytes hold its index, so a capability is a field like any other
//! and travels beside the bytes in the same `SCM_RIGHTS` packet. Decoding
//! takes the fds back out in the same order, checking each index.
//!
//! The encoding is positional and untagged (both ends know the type):
//! - integers, `bool`, `char`, floats: fixed width, little-endian;
//! - lengths (strings, byte strings, vectors, maps): `u32`, little-endian;
//! - `Option<T>`: a byte 0 or 1, then `T`; tuples: their fields in order;
//! - an `OwnedFd`: the `u32` index of the fd in the message's fd list.
//!
//! Fixed widths make the decoder short and easy to fuzz; messages between
//! nodes on one machine gain little from varints.
//!
//! # Bad input
//!
//! Decoding never trusts a length: a length is checked against the bytes
//! that remain before anything is allocated (a vector reserves at most one
//! element per remaining byte), so a peer that lies about a length gets a
//! [`WireError`], not a huge allocation. A fd index other than the next
//! one is an error, so every message has exactly one encoding. A message must use every fd it carries and every
//! byte it has ([`decode_message`]); on any error, the fds that arrived with
//! the message are dropped, which closes them: a rejected message leaks
//! nothing.

use std::fmt;
use std::os::fd::OwnedFd;

/// Why bytes could not be decoded as a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The bytes ended inside a value.
    Truncated,
    /// Bytes were left over after the value.
    TrailingBytes(usize),
    /// A length larger than the bytes that remain.
    BadLength(u64),
    /// A tag byte (`bool`, `Option`) that is neither 0 nor 1, or an
    /// invalid `char`.
    BadTag(u32),
    /// A string that is not UTF-8.
    BadUtf8,
    /// A fd index other than the next one (out of order, used twice, or
    /// past the message's fd list).
    BadFd(u32),
    /// The message carried fds it did not use.
    UnusedFds(usize),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Truncated => write!(f, "message ends inside a value"),
            WireError::TrailingBytes(n) => write!(f, "{n} bytes left over after the value"),
            WireError::BadLength(n) => write!(f, "length {n} exceeds the bytes that remain"),
            WireError::BadTag(t) => write!(f, "invalid tag or char value {t:#x}"),
            WireError::BadUtf8 => write!(f, "string is not UTF-8"),
            WireError::BadFd(i) => write!(f, "fd index {i} is out of order or out of range"),
            WireError::UnusedFds(n) => write!(f, "{n} fds sent with the message were not used"),
        }
    }
}

impl std::error::Error for WireError {}

/// Where a value is encoded: bytes, and the fds it carries.
#[derive(Debug, Default)]
pub struct Encoder {
    bytes: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Encoder {
    /// An empty encoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends raw bytes.
    pub fn put_bytes(&mut self, b: &[u8]) {
        self.bytes.extend_from_slice(b);
    }

    /// Appends a length (lengths are `u32` on the wire).
    ///
    /// # Panics
    ///
    /// When `n` does not fit in a `u32` (a single value of 4 GiB or more).
    pub fn put_len(&mut self, n: usize) {
        let n = u32::try_from(n).expect("procrt: a wire value longer than 4 GiB");
        self.put_bytes(&n.to_le_bytes());
    }

    /// Moves `fd` into the message; the bytes hold its index.
    pub fn put_fd(&mut self, fd: OwnedFd) {
        let i = self.fds.len();
        self.fds.push(fd);
        self.put_len(i);
    }

    /// The encoded bytes and fds.
    pub fn finish(self) -> (Vec<u8>, Vec<OwnedFd>) {
        (self.bytes, self.fds)
    }
}

/// Reads a value back: bytes, and the fds that arrived with them.
#[derive(Debug)]
pub struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// The fds not yet taken, in order.
    fds: std::vec::IntoIter<OwnedFd>,
    /// Index of the next fd.
    next_fd: u32,
}

impl<'a> Decoder<'a> {
    /// A decoder over `bytes`, with the fds that came with them.
    pub fn new(bytes: &'a [u8], fds: Vec<OwnedFd>) -> Self {
        Decoder {
            bytes,
            pos: 0,
            fds: fds.into_iter(),
            next_fd: 0,
        }
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    /// Takes the next `n` bytes.
    pub fn take_bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.remaining() {
            return Err(WireError::Truncated);
        }
        let b = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(b)
    }

    /// Takes the next `N` bytes as an array.
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let b = self.take_bytes(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    /// Reads a length and checks that at least `len * min_size` bytes
    /// remain (`min_size` 0 checks nothing: zero-sized elements).
    pub fn take_len(&mut self, min_size: usize) -> Result<usize, WireError> {
        let n = u32::from_le_bytes(self.take_array()?) as usize;
        if n.saturating_mul(min_size) > self.remaining() {
            return Err(WireError::BadLength(n as u64));
        }
        Ok(n)
    }

    /// Takes the next fd. Its index in the bytes must be the next one:
    /// an encoder numbers fds in the order it meets them, so any other
    /// index is malformed (and the encoding stays canonical).
    pub fn take_fd(&mut self) -> Result<OwnedFd, WireError> {
        let i = u32::from_le_bytes(self.take_array()?);
        if i != self.next_fd {
            return Err(WireError::BadFd(i));
        }
        let fd = self.fds.next().ok_or(WireError::BadFd(i))?;
        self.next_fd += 1;
        Ok(fd)
    }

    /// The fds not yet taken, for handing the rest of a message on (the
    /// next decoder numbers them from 0 again).
    pub fn into_fds(self) -> Vec<OwnedFd> {
        self.fds.collect()
    }

    /// Checks that the value used every byte and every fd.
    pub fn finish(self) -> Result<(), WireError> {
        if self.remaining() != 0 {
            return Err(WireError::TrailingBytes(self.remaining()));
        }
        let unused = self.fds.len();
        if unused != 0 {
            return Err(WireError::UnusedFds(unused));
        }
        Ok(())
    }
}

/// A type that can cross between nodes. Encoding consumes the value:
/// the fds it holds move into the message.
pub trait Wire: Sized {
    /// The smallest number of bytes an encoded value takes (used to bound
    /// a vector's length by the bytes that remain).
    const MIN_SIZE: usize;
    /// Appends the value.
    fn encode(self, e: &mut Encoder);
    /// Reads a value.
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError>;
}

/// Encodes `value` as one message's bytes and fds.
pub fn encode_message<T: Wire>(value: T) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut e = Encoder::new();
    value.encode(&mut e);
    e.finish()
}

/// Decodes one whole message: every byte and every fd must be used. On
/// error, the fds are closed.
pub fn decode_message<T: Wire>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T, WireError> {
    let mut d = Decoder::new(bytes, fds);
    let v = T::decode(&mut d)?;
    d.finish()?;
    Ok(v)
}

macro_rules! wire_int {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            const MIN_SIZE: usize = std::mem::size_of::<$t>();
            fn encode(self, e: &mut Encoder) {
                e.put_bytes(&self.to_le_bytes());
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
                Ok(<$t>::from_le_bytes(d.take_array()?))
            }
        }
    )*};
}
wire_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Wire for usize {
    const MIN_SIZE: usize = 8;
    fn encode(self, e: &mut Encoder) {
        (self as u64).encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let v = u64::decode(d)?;
        usize::try_from(v).map_err(|_| WireError::BadLength(v))
    }
}

impl Wire for isize {
    const MIN_SIZE: usize = 8;
    fn encode(self, e: &mut Encoder) {
        (self as i64).encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let v = i64::decode(d)?;
        isize::try_from(v).map_err(|_| WireError::BadLength(v as u64))
    }
}

impl Wire for bool {
    const MIN_SIZE: usize = 1;
    fn encode(self, e: &mut Encoder) {
        e.put_bytes(&[self as u8]);
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        match u8::decode(d)? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(WireError::BadTag(t.into())),
        }
    }
}

impl Wire for char {
    const MIN_SIZE: usize = 4;
    fn encode(self, e: &mut Encoder) {
        (self as u32).encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let v = u32::decode(d)?;
        char::from_u32(v).ok_or(WireError::BadTag(v))
    }
}

impl Wire for () {
    const MIN_SIZE: usize = 0;
    fn encode(self, _: &mut Encoder) {}
    fn decode(_: &mut Decoder<'_>) -> Result<Self, WireError> {
        Ok(())
    }
}

impl Wire for String {
    const MIN_SIZE: usize = 4;
    fn encode(self, e: &mut Encoder) {
        e.put_len(self.len());
        e.put_bytes(self.as_bytes());
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = d.take_len(1)?;
        let b = d.take_bytes(n)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::BadUtf8)
    }
}

/// A byte string, encoded as a length and the bytes (a `Vec<u8>` is the
/// same on the wire, element by element, but this copies in one go).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl Wire for Bytes {
    const MIN_SIZE: usize = 4;
    fn encode(self, e: &mut Encoder) {
        e.put_len(self.0.len());
        e.put_bytes(&self.0);
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = d.take_len(1)?;
        Ok(Bytes(d.take_bytes(n)?.to_vec()))
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_SIZE: usize = 4;
    fn encode(self, e: &mut Encoder) {
        e.put_len(self.len());
        for x in self {
            x.encode(e);
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let n = d.take_len(T::MIN_SIZE)?;
        // Zero-sized elements: the length alone is not bounded by bytes, so
        // reserve nothing up front.
        let mut v = Vec::with_capacity(if T::MIN_SIZE == 0 { 0 } else { n });
        for _ in 0..n {
            v.push(T::decode(d)?);
        }
        Ok(v)
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_SIZE: usize = 1;
    fn encode(self, e: &mut Encoder) {
        match self {
            None => e.put_bytes(&[0]),
            Some(x) => {
                e.put_bytes(&[1]);
                x.encode(e);
            }
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        match u8::decode(d)? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(d)?)),
            t => Err(WireError::BadTag(t.into())),
        }
    }
}

impl<T: Wire, E: Wire> Wire for Result<T, E> {
    const MIN_SIZE: usize = 1;
    fn encode(self, e: &mut Encoder) {
        match self {
            Ok(x) => {
                e.put_bytes(&[0]);
                x.encode(e);
            }
            Err(x) => {
                e.put_bytes(&[1]);
                x.encode(e);
            }
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        match u8::decode(d)? {
            0 => Ok(Ok(T::decode(d)?)),
            1 => Ok(Err(E::decode(d)?)),
            t => Err(WireError::BadTag(t.into())),
        }
    }
}

impl<T: Wire> Wire for Box<T> {
    const MIN_SIZE: usize = T::MIN_SIZE;
    fn encode(self, e: &mut Encoder) {
        (*self).encode(e)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        T::decode(d).map(Box::new)
    }
}

impl Wire for OwnedFd {
    const MIN_SIZE: usize = 4;
    fn encode(self, e: &mut Encoder) {
        e.put_fd(self)
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        d.take_fd()
    }
}

macro_rules! wire_tuple {
    ($($name:ident)+) => {
        impl<$($name: Wire),+> Wire for ($($name,)+) {
            const MIN_SIZE: usize = 0 $(+ $name::MIN_SIZE)+;
            #[allow(non_snake_case)]
            fn encode(self, e: &mut Encoder) {
                let ($($name,)+) = self;
                $($name.encode(e);)+
            }
            fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
                Ok(($($name::decode(d)?,)+))
            }
        }
    };
}
wire_tuple!(A);
wire_tuple!(A B);
wire_tuple!(A B C);
wire_tuple!(A B C D);
wire_tuple!(A B C D E);
wire_tuple!(A B C D E F);

impl<T: Wire, const N: usize> Wire for [T; N] {
    const MIN_SIZE: usize = T::MIN_SIZE * N;
    fn encode(self, e: &mut Encoder) {
        for x in self {
            x.encode(e);
        }
    }
    fn decode(d: &mut Decoder<'_>) -> Result<Self, WireError> {
        let mut v = Vec::with_capacity(N);
        for _ in 0..N {
            v.push(T::decode(d)?);
        }
        Ok(v.try_into()
            .unwrap_or_else(|_| unreachable!("exactly N elements")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    fn round<T: Wire + PartialEq + fmt::Debug + Clone>(v: T) {
        let (b, fds) = encode_message(v.clone());
        assert_eq!(decode_message::<T>(&b, fds).unwrap(), v);
    }

    #[test]
    fn every_type_round_trips() {
        round(0u8);
        round(u64::MAX);
        round(-5i32);
        round(i128::MIN);
        round(1.5f64);
        round(true);
        round('λ');
        round(String::from("héllo"));
        round(Bytes(vec![0, 1, 255]));
        round(vec![1u16, 2, 3]);
        round(Some(vec![String::from("a")]));
        round(None::<u8>);
        round((1u8, String::from("x"), Some(2u64)));
        round(Ok::<u8, String>(3));
        round(Err::<u8, String>("e".into()));
        round([7u32; 3]);
        round(vec![(); 5]);
        round(usize::MAX);
    }

    #[test]
    fn lies_about_lengths_are_errors_not_allocations() {
        let mut e = Encoder::new();
        e.put_len(u32::MAX as usize);
        let (b, _) = e.finish();
        assert_eq!(
            decode_message::<Vec<u64>>(&b, vec![]),
            Err(WireError::BadLength(u32::MAX as u64))
        );
        assert_eq!(
            decode_message::<String>(&b, vec![]),
            Err(WireError::BadLength(u32::MAX as u64))
        );
        assert_eq!(
            decode_message::<u32>(&[1, 2], vec![]),
            Err(WireError::Truncated)
        );
        assert_eq!(
            decode_message::<u8>(&[1, 2], vec![]),
            Err(WireError::TrailingBytes(1))
        );
        assert_eq!(
            decode_message::<bool>(&[2], vec![]),
            Err(WireError::BadTag(2))
        );
        assert_eq!(
            decode_message::<String>(&[1, 0, 0, 0, 0xff], vec![]),
            Err(WireError::BadUtf8)
        );
    }

    fn memfd(contents: &[u8]) -> OwnedFd {
        let mut f: std::fs::File = tempfile_fd().into();
        f.write_all(contents).unwrap();
        f.rewind().unwrap();
        f.into()
    }

    fn tempfile_fd() -> OwnedFd {
        // SAFETY: memfd_create with a valid C string; a non-negative result
        // is a fresh fd that we own.
        let fd = unsafe { libc::memfd_create(c"procrt-wire-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0, "memfd_create failed");
        // SAFETY: as above.
        unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) }
    }

    #[test]
    fn fds_travel_by_index_and_unused_or_reused_fds_are_errors() {
        let v = (String::from("f"), memfd(b"abc"), vec![memfd(b"d")]);
        let (b, fds) = encode_message(v);
        assert_eq!(fds.len(), 2);
        let (s, a, rest) = decode_message::<(String, OwnedFd, Vec<OwnedFd>)>(&b, fds).unwrap();
        assert_eq!(s, "f");
        let mut buf = String::new();
        std::fs::File::from(a).read_to_string(&mut buf).unwrap();
        assert_eq!(buf, "abc");
        assert_eq!(rest.len(), 1);

        // An extra fd that the value does not use.
        let (b, mut fds) = encode_message(7u32);
        fds.push(memfd(b""));
        assert_eq!(decode_message::<u32>(&b, fds), Err(WireError::UnusedFds(1)));
        // The same index twice.
        let (b, fds) = encode_message(memfd(b""));
        let twice = [b.clone(), b].concat();
        assert_eq!(
            decode_message::<(OwnedFd, OwnedFd)>(&twice, fds).err(),
            Some(WireError::BadFd(0))
        );
    }
}
