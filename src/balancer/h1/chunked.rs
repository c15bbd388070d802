//! The chunked transfer coding (RFC 9112 section 7.1) as a pure state machine: fed the bytes of a
//! body as they arrive, it says where the body ends (the last chunk and the trailer section) and
//! optionally decodes the payload. Size lines are strict (hex digits, at most 15 of them, then an
//! extension or CRLF); extension and trailer lines are bounded.

/// The chunked transfer coding's framing (RFC 9112 section 7.1), scanned byte by byte to find where
/// a body ends, and optionally decoded. Trailer fields are passed through (or dropped when decoding).
#[derive(Default)]
pub struct Chunked {
    state: CState,
    size: u64,
    digits: u8,
    line: usize,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum CState {
    #[default]
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

/// Longest chunk-size line (with extensions) or trailer line accepted.
const MAX_CHUNK_LINE: usize = 4096;

impl Chunked {
    /// The last chunk and the trailer section have been read.
    pub fn done(&self) -> bool {
        self.state == CState::Done
    }

    /// The one byte the grammar allows here, then `next`.
    fn expect(&mut self, b: u8, want: u8, next: CState) -> Result<(), ()> {
        if b != want {
            return Err(());
        }
        self.state = next;
        Ok(())
    }

    /// A byte of a chunk extension or trailer line (bounded); its CR leads to `on_cr`.
    fn line_byte(&mut self, b: u8, on_cr: CState) -> Result<(), ()> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE || b == b'\n' {
            return Err(());
        }
        if b == b'\r' {
            self.state = on_cr;
        }
        Ok(())
    }

    /// Consumes bytes of `input` that belong to the body (stopping at its end) and returns how many;
    /// with `data`, appends the payload bytes to it.
    pub fn feed(&mut self, input: &[u8], mut data: Option<&mut Vec<u8>>) -> Result<usize, ()> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                CState::Size => match (b as char).to_digit(16) {
                    Some(v) => {
                        if self.digits >= 15 {
                            return Err(());
                        }
                        self.size = self.size * 16 + u64::from(v);
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err(()),
                    None => match b {
                        b';' | b' ' | b'\t' => self.state = CState::Ext,
                        b'\r' => self.state = CState::SizeLf,
                        _ => return Err(()),
                    },
                },
                CState::Ext => self.line_byte(b, CState::SizeLf)?,
                CState::SizeLf => {
                    let next = if self.size == 0 {
                        CState::TrailerStart
                    } else {
                        CState::Data
                    };
                    self.expect(b, b'\n', next)?;
                    self.line = 0;
                    self.digits = 0;
                }
                CState::Data => {
                    let n = (self.size.min((input.len() - i) as u64)) as usize;
                    if let Some(d) = data.as_deref_mut() {
                        d.extend_from_slice(&input[i..i + n]);
                    }
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = CState::DataCr;
                    }
                    continue;
                }
                CState::DataCr => self.expect(b, b'\r', CState::DataLf)?,
                CState::DataLf => self.expect(b, b'\n', CState::Size)?,
                CState::TrailerStart => {
                    self.line = 0;
                    self.state = match b {
                        b'\r' => CState::EndLf,
                        // A bare LF would end the body for a lenient parser and start a trailer
                        // line for a strict one: the mismatch smuggling needs.
                        b'\n' => return Err(()),
                        _ => CState::TrailerLine,
                    };
                }
                CState::TrailerLine => self.line_byte(b, CState::TrailerLf)?,
                CState::TrailerLf => self.expect(b, b'\n', CState::TrailerStart)?,
                CState::EndLf => {
                    self.expect(b, b'\n', CState::Done)?;
                    return Ok(i + 1);
                }
                CState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(input: &[u8]) -> Result<(usize, bool, Vec<u8>), ()> {
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let n = d.feed(input, Some(&mut out))?;
        Ok((n, d.done(), out))
    }

    #[test]
    fn chunked_bodies_end_where_the_last_chunk_ends() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (n, done, out) = scan(body).unwrap();
        assert!(done);
        assert_eq!(&body[n..], b"GET / HTTP/1.1\r\n");
        assert_eq!(out, b"hello world");
    }

    #[test]
    fn chunked_trailers_and_byte_by_byte_feeding() {
        let body = b"3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n";
        let mut d = Chunked::default();
        let mut out = Vec::new();
        for (i, b) in body.iter().enumerate() {
            assert!(!d.done(), "done early at {i}");
            assert_eq!(d.feed(std::slice::from_ref(b), Some(&mut out)), Ok(1));
        }
        assert!(d.done());
        assert_eq!(out, b"abc");
    }

    /// Bodies a smuggler would try: each must be refused (an error) or, if accepted, end exactly
    /// where the grammar says.
    #[test]
    fn bad_chunk_sizes_and_framing_are_errors() {
        let long_ext = format!("1;{}\r\na\r\n0\r\n\r\n", "x".repeat(MAX_CHUNK_LINE + 1));
        let long_trailer = format!("0\r\nx: {}\r\n\r\n", "y".repeat(MAX_CHUNK_LINE + 1));
        let table: &[(&str, &[u8])] = &[
            ("not hex", b"zz\r\n"),
            ("negative", b"-1\r\n"),
            ("0x prefix", b"0x5\r\nhello\r\n"),
            ("leading space", b" 5\r\nhello\r\n"),
            ("empty size", b"\r\n"),
            ("16 hex digits overflow", b"ffffffffffffffff1\r\n"),
            ("16 digits even if small", b"0000000000000001\r\na\r\n"),
            ("LF only after size", b"3\nabc"),
            ("bare CR in size line", b"3\rabc"),
            ("data longer than size", b"3\r\nabcX\r\n"),
            ("LF only after data", b"3\r\nabc\n0\r\n\r\n"),
            ("LF in extension", b"3;a\nb\r\nabc\r\n"),
            ("size then garbage", b"3x\r\nabc\r\n"),
            ("extension line too long", long_ext.as_bytes()),
            ("trailer line too long", long_trailer.as_bytes()),
            (
                "bare LF starts the trailer section",
                b"0\r\n\nGET / HTTP/1.1\r\n\r\n",
            ),
            ("bare LF after a trailer", b"0\r\nx: 1\r\n\n\r\n"),
            ("bare LF ends the trailer section", b"0\r\n\n"),
        ];
        for (what, input) in table {
            assert!(scan(input).is_err(), "{what}: {input:?} accepted");
        }
    }

    #[test]
    fn good_chunk_framing() {
        // (input, bytes that belong to the body, done, decoded payload)
        let table: &[(&[u8], usize, bool, &[u8])] = &[
            (b"0\r\n\r\n", 5, true, b""),
            (b"A\r\n0123456789\r\n0\r\n\r\n", 20, true, b"0123456789"),
            (b"a\r\n0123456789\r\n0\r\n\r\nrest", 20, true, b"0123456789"),
            (b"3 ; name=v\r\nabc\r\n0\r\n\r\n", 22, true, b"abc"),
            (b"00003\r\nabc\r\n0\r\n\r\n", 17, true, b"abc"),
            (b"3\r\nab", 5, false, b"ab"),
            (b"0\r\nx: 1\r\ny: 2\r\n\r\n", 17, true, b""),
        ];
        for (input, n, done, data) in table {
            assert_eq!(
                scan(input),
                Ok((*n, *done, data.to_vec())),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
