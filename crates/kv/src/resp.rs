//! RESP2, the Redis serialization protocol: an incremental request parser and reply encoders.
//!
//! A request is either a *multibulk* frame (`*<n>\r\n` then `n` times `$<len>\r\n<bytes>\r\n`)
//! or an *inline* command (one line of space-separated words, as typed into telnet). The
//! [`Parser`] takes bytes in whatever pieces they arrive and yields one [`Command`] per complete
//! request; a client may send many requests back to back (pipelining).
//!
//! # Bounded memory
//!
//! Every byte the parser keeps was sent by the peer, so every buffer has a limit
//! ([`ParserLimits`]), checked *before* bytes are stored. A declared bulk length is never
//! allocated up front: the argument grows as its bytes actually arrive, at most doubling the
//! space already used, so a peer that declares 1 GiB and sends 10 bytes costs 10 bytes.
//! Malformed input is a [`ProtocolError`], after which the parser refuses further input (the
//! connection is to be closed, as Redis does).

use std::fmt;

/// Limits on what one connection's parser may buffer. Fixed when the parser is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Longest bulk string (one argument), in bytes. Redis allows 512 MiB.
    pub max_bulk: usize,
    /// Most arguments in one multibulk request.
    pub max_elements: usize,
    /// Longest inline request line, in bytes (Redis: 64 KiB).
    pub max_inline: usize,
    /// Most bytes one request may occupy in the parser (arguments and bookkeeping together).
    pub max_request: usize,
}

impl Default for ParserLimits {
    fn default() -> ParserLimits {
        ParserLimits {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_inline: 64 << 10,
            max_request: 128 << 20,
        }
    }
}

/// Longest `*<n>` or `$<len>` header line, in bytes: a sign, 19 digits, and room for sloppiness.
const MAX_HEADER_LINE: usize = 32;
/// Arguments reserved when a multibulk header arrives, whatever count it declares.
const ARGS_RESERVED: usize = 16;
/// Buffers larger than this are given back after the request that grew them.
const KEEP_CAPACITY: usize = 1 << 20;

/// Input that is not valid RESP. The message is what Redis would say after `Protocol error: `.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError(pub String);

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Protocol error: {}", self.0)
    }
}

impl std::error::Error for ProtocolError {}

fn protocol<T>(msg: impl Into<String>) -> Result<T, ProtocolError> {
    Err(ProtocolError(msg.into()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Between requests.
    Start,
    /// Reading an inline request line into `line`.
    Inline,
    /// Reading the count of a `*<n>` header into `line`.
    ArrayHeader,
    /// Expecting the `$` of the next bulk; `left` bulks remain, this one included.
    BulkPrefix { left: usize },
    /// Reading the length of a `$<len>` header into `line`.
    BulkHeader { left: usize },
    /// Reading `need` more bytes of a bulk's data.
    BulkData { left: usize, need: usize },
    /// Expecting the `\r` after a bulk's data.
    BulkCr { left: usize },
    /// Expecting the `\n` after a bulk's data.
    BulkLf { left: usize },
    /// A complete request was handed out; the next call starts over.
    Done,
    /// A protocol error was reported; all further input is refused.
    Failed,
}

/// An incremental RESP2 request parser. See the [module docs](self).
pub struct Parser {
    limits: ParserLimits,
    state: State,
    /// The header or inline line read so far (without its `\n`).
    line: Vec<u8>,
    /// The arguments of the request being read, back to back.
    data: Vec<u8>,
    /// `(start, end)` of each argument in `data`.
    args: Vec<(usize, usize)>,
}

/// One complete request: its arguments, borrowed from the parser until its next call.
#[derive(Clone, Copy)]
pub struct Command<'a> {
    data: &'a [u8],
    args: &'a [(usize, usize)],
}

impl<'a> Command<'a> {
    /// Number of arguments, the command name included.
    pub fn len(&self) -> usize {
        self.args.len()
    }

    pub fn is_empty(&self) -> bool {
        self.args.is_empty()
    }

    /// Argument `i` (0 is the command name).
    pub fn arg(&self, i: usize) -> &'a [u8] {
        let (s, e) = self.args[i];
        &self.data[s..e]
    }

    /// Every argument in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + 'a {
        let data = self.data;
        self.args.iter().map(move |&(s, e)| &data[s..e])
    }

    /// The arguments, copied (for tests and slow paths).
    pub fn to_vecs(&self) -> Vec<Vec<u8>> {
        self.iter().map(<[u8]>::to_vec).collect()
    }
}

impl fmt::Debug for Command<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl Parser {
    pub fn new(limits: ParserLimits) -> Parser {
        Parser {
            limits,
            state: State::Start,
            line: Vec::new(),
            data: Vec::new(),
            args: Vec::new(),
        }
    }

    pub fn limits(&self) -> &ParserLimits {
        &self.limits
    }

    /// Bytes of memory the parser holds now (capacity of its buffers).
    pub fn buffered(&self) -> usize {
        self.line.capacity()
            + self.data.capacity()
            + self.args.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    /// Whether the parser is between requests (no partial request buffered).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Start | State::Done)
    }

    /// Consumes bytes from the front of `input` until a request is complete (returned, with
    /// `input` advanced past it) or `input` is used up (`Ok(None)`, every byte kept). After an
    /// error the parser refuses everything; the connection should be closed.
    pub fn next<'p>(&'p mut self, input: &mut &[u8]) -> Result<Option<Command<'p>>, ProtocolError> {
        if self.state == State::Done {
            self.reset();
        }
        match self.advance(input) {
            Ok(true) => {
                self.state = State::Done;
                debug_assert!(!self.args.is_empty(), "a request has a command name");
                Ok(Some(Command {
                    data: &self.data,
                    args: &self.args,
                }))
            }
            Ok(false) => Ok(None),
            Err(e) => {
                self.state = State::Failed;
                self.line = Vec::new();
                self.data = Vec::new();
                self.args = Vec::new();
                Err(e)
            }
        }
    }

    fn reset(&mut self) {
        self.state = State::Start;
        self.line.clear();
        self.data.clear();
        self.args.clear();
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        }
        if self.args.capacity() * std::mem::size_of::<(usize, usize)>() > KEEP_CAPACITY {
            self.args = Vec::new();
        }
        if self.line.capacity() > self.limits.max_inline.min(KEEP_CAPACITY) {
            self.line = Vec::new();
        }
    }

    /// Runs the state machine over `input`; true once a request is complete.
    fn advance(&mut self, input: &mut &[u8]) -> Result<bool, ProtocolError> {
        loop {
            match self.state {
                State::Failed => return protocol("the connection already sent invalid input"),
                State::Done => unreachable!("reset before advancing"),
                State::Start => {
                    let Some((&first, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    if first == b'*' {
                        *input = rest;
                        self.state = State::ArrayHeader;
                    } else {
                        self.state = State::Inline;
                    }
                }
                State::Inline => {
                    if !self.read_line(input, self.limits.max_inline, "too big inline request")? {
                        return Ok(false);
                    }
                    if self.line.last() == Some(&b'\r') {
                        self.line.pop();
                    }
                    let line = std::mem::take(&mut self.line);
                    let split = split_inline(&line, &mut self.data, &mut self.args);
                    self.line = line;
                    self.line.clear();
                    split?;
                    if self.args.is_empty() {
                        // An empty line is no request (Redis ignores it too).
                        self.state = State::Start;
                        continue;
                    }
                    return Ok(true);
                }
                State::ArrayHeader => {
                    if !self.read_line(input, MAX_HEADER_LINE, "too big mbulk count string")? {
                        return Ok(false);
                    }
                    let n = parse_header_number(&self.line)
                        .ok_or_else(|| ProtocolError("invalid multibulk length".into()))?;
                    self.line.clear();
                    if n <= 0 {
                        // `*0` and `*-1` are empty requests; Redis skips them.
                        self.state = State::Start;
                        continue;
                    }
                    if n as u64 > self.limits.max_elements as u64 {
                        return protocol("invalid multibulk length");
                    }
                    let n = n as usize;
                    self.args.reserve(n.min(ARGS_RESERVED));
                    self.state = State::BulkPrefix { left: n };
                }
                State::BulkPrefix { left } => {
                    let Some((&first, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    if first != b'$' {
                        return protocol(format!("expected '$', got '{}'", char::from(first)));
                    }
                    *input = rest;
                    self.state = State::BulkHeader { left };
                }
                State::BulkHeader { left } => {
                    if !self.read_line(input, MAX_HEADER_LINE, "too big bulk count string")? {
                        return Ok(false);
                    }
                    let len = parse_header_number(&self.line)
                        .filter(|&n| n >= 0 && n as u64 <= self.limits.max_bulk as u64)
                        .ok_or_else(|| ProtocolError("invalid bulk length".into()))?;
                    self.line.clear();
                    let len = len as usize;
                    let held = self.data.len() + (self.args.len() + 1) * 16;
                    if held.saturating_add(len) > self.limits.max_request {
                        return protocol(format!(
                            "request larger than the server's limit of {} bytes",
                            self.limits.max_request
                        ));
                    }
                    if self.args.len() == self.args.capacity() {
                        // Grow with the arguments that actually arrive, not the declared count.
                        self.args.reserve(self.args.len().max(ARGS_RESERVED));
                    }
                    let at = self.data.len();
                    self.args.push((at, at));
                    self.state = if len == 0 {
                        State::BulkCr { left }
                    } else {
                        State::BulkData { left, need: len }
                    };
                }
                State::BulkData { left, need } => {
                    if input.is_empty() {
                        return Ok(false);
                    }
                    let take = need.min(input.len());
                    let spare = self.data.capacity() - self.data.len();
                    if spare < take {
                        // At most double what is used, and never past what this bulk still
                        // needs: memory follows bytes that arrived, not lengths declared.
                        let grow = self.data.len().max(take).min(need);
                        self.data.reserve_exact(grow);
                    }
                    self.data.extend_from_slice(&input[..take]);
                    *input = &input[take..];
                    let last = self
                        .args
                        .last_mut()
                        .expect("a bulk being read has an entry");
                    last.1 = self.data.len();
                    self.state = if take == need {
                        State::BulkCr { left }
                    } else {
                        State::BulkData {
                            left,
                            need: need - take,
                        }
                    };
                }
                State::BulkCr { left } => {
                    let Some((&first, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    if first != b'\r' {
                        return protocol("expected CRLF after bulk data");
                    }
                    *input = rest;
                    self.state = State::BulkLf { left };
                }
                State::BulkLf { left } => {
                    let Some((&first, rest)) = input.split_first() else {
                        return Ok(false);
                    };
                    if first != b'\n' {
                        return protocol("expected CRLF after bulk data");
                    }
                    *input = rest;
                    if left == 1 {
                        return Ok(true);
                    }
                    self.state = State::BulkPrefix { left: left - 1 };
                }
            }
        }
    }

    /// Moves bytes up to a `\n` into `line` (without it). True once the `\n` was seen.
    fn read_line(
        &mut self,
        input: &mut &[u8],
        max: usize,
        too_long: &str,
    ) -> Result<bool, ProtocolError> {
        let (piece, found) = match input.iter().position(|&b| b == b'\n') {
            Some(i) => (&input[..i], true),
            None => (*input, false),
        };
        if self.line.len() + piece.len() > max {
            return protocol(too_long);
        }
        self.line.extend_from_slice(piece);
        *input = &input[piece.len() + usize::from(found)..];
        Ok(found)
    }
}

/// The number of a `*<n>\r` or `$<len>\r` line (the `\n` already stripped): an optional `-`
/// and decimal digits, then exactly one `\r`.
fn parse_header_number(line: &[u8]) -> Option<i64> {
    let digits = line.strip_suffix(b"\r")?;
    let (negative, digits) = match digits.strip_prefix(b"-") {
        Some(d) => (true, d),
        None => (false, digits),
    };
    if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits
        .iter()
        .fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if negative { -n } else { n })
}

/// Splits an inline request line into arguments, as Redis's `sdssplitargs` does: words
/// separated by blanks, `"double quoted"` with backslash escapes, `'single quoted'`.
fn split_inline(
    line: &[u8],
    data: &mut Vec<u8>,
    args: &mut Vec<(usize, usize)>,
) -> Result<(), ProtocolError> {
    let unbalanced = || ProtocolError("unbalanced quotes in request".into());
    let mut i = 0;
    loop {
        while i < line.len() && line[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == line.len() {
            return Ok(());
        }
        let start = data.len();
        match line[i] {
            b'"' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    match c {
                        b'\\'
                            if i + 3 < line.len()
                                && line[i + 1] == b'x'
                                && line[i + 2].is_ascii_hexdigit()
                                && line[i + 3].is_ascii_hexdigit() =>
                        {
                            data.push(hex(line[i + 2]) << 4 | hex(line[i + 3]));
                            i += 4;
                        }
                        b'\\' if i + 1 < line.len() => {
                            data.push(match line[i + 1] {
                                b'n' => b'\n',
                                b'r' => b'\r',
                                b't' => b'\t',
                                b'b' => 8,
                                b'a' => 7,
                                other => other,
                            });
                            i += 2;
                        }
                        b'"' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            break;
                        }
                        other => {
                            data.push(other);
                            i += 1;
                        }
                    }
                }
            }
            b'\'' => {
                i += 1;
                loop {
                    let Some(&c) = line.get(i) else {
                        return Err(unbalanced());
                    };
                    match c {
                        b'\\' if line.get(i + 1) == Some(&b'\'') => {
                            data.push(b'\'');
                            i += 2;
                        }
                        b'\'' => {
                            i += 1;
                            if line.get(i).is_some_and(|c| !c.is_ascii_whitespace()) {
                                return Err(unbalanced());
                            }
                            break;
                        }
                        other => {
                            data.push(other);
                            i += 1;
                        }
                    }
                }
            }
            _ => {
                while i < line.len() && !line[i].is_ascii_whitespace() {
                    data.push(line[i]);
                    i += 1;
                }
            }
        }
        args.push((start, data.len()));
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

// ----- reply encoders ------------------------------------------------------------------------

/// `+<s>\r\n`. `s` must not contain CR or LF.
pub fn simple(out: &mut Vec<u8>, s: &str) {
    debug_assert!(!s.contains(['\r', '\n']), "a simple string is one line");
    out.push(b'+');
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `-<msg>\r\n`; `msg` starts with the error code (`ERR`, `WRONGTYPE`, ...). Line breaks in it
/// become spaces, so a reply is always one line.
pub fn error(out: &mut Vec<u8>, msg: &str) {
    out.push(b'-');
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}

/// `:<n>\r\n`.
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// `$<len>\r\n<bytes>\r\n`.
pub fn bulk(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'$');
    push_decimal(out, bytes.len() as i64);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(bytes);
    out.extend_from_slice(b"\r\n");
}

/// `$-1\r\n`, the null bulk string.
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*<n>\r\n`: an array of `n` replies follows.
pub fn array(out: &mut Vec<u8>, n: usize) {
    out.push(b'*');
    push_decimal(out, n as i64);
    out.extend_from_slice(b"\r\n");
}

/// A request as a multibulk frame (what clients send, and what the append-only file holds).
pub fn request<'a>(out: &mut Vec<u8>, args: impl ExactSizeIterator<Item = &'a [u8]>) {
    array(out, args.len());
    for a in args {
        bulk(out, a);
    }
}

/// Appends `n` in decimal without allocating.
pub fn push_decimal(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Vec<Vec<u8>>>, ProtocolError> {
        let mut p = Parser::new(ParserLimits::default());
        let mut rest = input;
        let mut out = Vec::new();
        while let Some(c) = p.next(&mut rest)? {
            out.push(c.to_vecs());
        }
        assert!(rest.is_empty());
        Ok(out)
    }

    #[test]
    fn multibulk_and_inline_requests_parse_to_their_arguments() {
        let got =
            parse_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n  set a  \"b c\\x41\" 'd'\r\n\r\n")
                .unwrap();
        assert_eq!(
            got,
            vec![
                vec![b"GET".to_vec(), b"k".to_vec()],
                vec![b"PING".to_vec()],
                vec![
                    b"set".to_vec(),
                    b"a".to_vec(),
                    b"b cA".to_vec(),
                    b"d".to_vec()
                ],
            ]
        );
    }

    #[test]
    fn header_numbers_are_strict() {
        assert_eq!(parse_header_number(b"12\r"), Some(12));
        assert_eq!(parse_header_number(b"-1\r"), Some(-1));
        assert_eq!(parse_header_number(b"12"), None);
        assert_eq!(parse_header_number(b"1 2\r"), None);
        assert_eq!(parse_header_number(b"\r"), None);
        assert_eq!(parse_header_number(b"-\r"), None);
        assert_eq!(parse_header_number(b"9999999999999999999\r"), None);
    }

    #[test]
    fn decimals_cover_the_extremes() {
        for n in [0, 7, -7, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
        }
    }
}
