//! Splitting a records file into its elements as it is read, so that a
//! large `layers.json` is never in memory whole: a scan that follows JSON
//! strings, escapes and nesting finds where each top-level element of the
//! array ends; each element is then decoded from its own bytes
//! ([`super::decode_records_from`]), which also checks it.

/// Splits a JSON array read from a stream into its elements' bytes.
pub(super) struct Elements<R> {
    reader: R,
    /// Bytes consumed so far (for messages).
    offset: u64,
    /// `[` seen; `]` seen.
    opened: bool,
    closed: bool,
}

impl<R: std::io::BufRead> Elements<R> {
    pub(super) fn new(reader: R) -> Self {
        Elements {
            reader,
            offset: 0,
            opened: false,
            closed: false,
        }
    }

    /// The next byte that is not JSON whitespace, not consumed.
    fn peek_token(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let blank = buf
                .iter()
                .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
                .count();
            if blank < buf.len() {
                let b = buf[blank];
                self.consume(blank);
                return Ok(Some(b));
            }
            let n = buf.len();
            self.consume(n);
        }
    }

    fn consume(&mut self, n: usize) {
        self.reader.consume(n);
        self.offset += n as u64;
    }

    fn bad(&self, what: &str) -> String {
        format!("{what} at byte {}", self.offset)
    }

    /// The next element into `element`: `Ok(Ok(true))`, or `Ok(Ok(false))`
    /// after the closing `]` (nothing but whitespace may follow; an empty
    /// or blank file is an empty array), or `Ok(Err(message))` when the
    /// text is not a JSON array.
    pub(super) fn next(&mut self, element: &mut Vec<u8>) -> std::io::Result<Result<bool, String>> {
        element.clear();
        if self.closed {
            return Ok(Ok(false));
        }
        if !self.opened {
            match self.peek_token()? {
                None => return Ok(Ok(false)),
                Some(b'[') => {
                    self.consume(1);
                    self.opened = true;
                    if self.peek_token()? == Some(b']') {
                        self.consume(1);
                        return self.end();
                    }
                }
                Some(_) => return Ok(Err(self.bad("invalid type: expected a sequence"))),
            }
        } else {
            match self.peek_token()? {
                Some(b',') => self.consume(1),
                Some(b']') => {
                    self.consume(1);
                    return self.end();
                }
                None => return Ok(Err(self.bad("EOF while parsing a list"))),
                Some(_) => return Ok(Err(self.bad("expected `,` or `]`"))),
            }
        }
        // One element: up to the `,` or `]` outside strings at depth 0.
        match self.peek_token()? {
            None => return Ok(Err(self.bad("EOF while parsing a value"))),
            Some(b',' | b']') => return Ok(Err(self.bad("expected value"))),
            Some(_) => {}
        }
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        loop {
            let buf = self.reader.fill_buf()?;
            if buf.is_empty() {
                return Ok(Err(self.bad("EOF while parsing a value")));
            }
            let mut end = None;
            for (i, &b) in buf.iter().enumerate() {
                if in_string {
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let take = end.unwrap_or(buf.len());
            element.extend_from_slice(&buf[..take]);
            self.consume(take);
            if end.is_some() {
                return Ok(Ok(true));
            }
        }
    }

    /// After `]`: only whitespace may follow.
    fn end(&mut self) -> std::io::Result<Result<bool, String>> {
        self.closed = true;
        match self.peek_token()? {
            None => Ok(Ok(false)),
            Some(_) => Ok(Err(self.bad("trailing characters"))),
        }
    }
}
