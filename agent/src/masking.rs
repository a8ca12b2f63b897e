//! Secret masking: the one chokepoint every byte of an attempt's log, summary, error
//! and output variables passes through before it leaves the agent.
//!
//! For each secret value it masks the value itself, each line of a multi-line value,
//! and the value's base64 forms (standard and URL-safe, padded or not), so that
//! `echo $TOKEN | base64` does not leak it either. Log text is masked line by line with
//! a streaming buffer, so a value the plugin writes in several pieces (one `write` per
//! character, say) is joined before it is matched.

use aho_corasick::{AhoCorasick, MatchKind};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

/// What a masked value is replaced with.
pub const MASK: &str = "***";
/// Values shorter than this are not masked: masking "a" or "1" would garble every line
/// and tell a reader the value anyway.
pub const MIN_SECRET_LEN: usize = 4;
/// Bytes of an unfinished line held back before it is masked and passed on anyway.
const MAX_HELD: usize = 256 * 1024;

/// Masks a fixed set of secret values.
#[derive(Debug, Clone)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
}

impl Masker {
    /// A masker for these values (and their lines and base64 forms).
    pub fn new<'a>(values: impl IntoIterator<Item = &'a str>) -> Masker {
        let mut patterns: Vec<String> = Vec::new();
        for value in values {
            let mut forms = vec![value.to_string()];
            forms.extend(value.lines().map(|l| l.trim().to_string()));
            for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                forms.push(engine.encode(value));
            }
            patterns.extend(forms.into_iter().filter(|f| f.len() >= MIN_SECRET_LEN));
        }
        patterns.sort();
        patterns.dedup();
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Leftmost-longest: the whole value wins over one of its lines.
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(&patterns)
                .ok()
        };
        Masker { matcher }
    }

    /// Whether there is anything to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn mask(&self, text: &str) -> String {
        match &self.matcher {
            None => text.to_string(),
            Some(m) => m.replace_all(text, &vec![MASK; m.patterns_len()]),
        }
    }

    /// Like [`Masker::mask`], for bytes that may not be UTF-8.
    pub fn mask_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        match &self.matcher {
            None => bytes.to_vec(),
            Some(m) => m.replace_all_bytes(bytes, &vec![MASK.as_bytes(); m.patterns_len()]),
        }
    }

    /// A streaming masker over this one.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            masker: self.clone(),
            held: Vec::new(),
        }
    }
}

/// Masks a byte stream line by line: whole lines are masked and passed on; an
/// unfinished line is held until its end arrives (or it grows past a limit).
#[derive(Debug)]
pub struct StreamMasker {
    masker: Masker,
    held: Vec<u8>,
}

impl StreamMasker {
    /// Feeds bytes; returns what may be passed on now.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<u8> {
        if self.masker.is_empty() {
            return bytes.to_vec();
        }
        self.held.extend_from_slice(bytes);
        let cut = match self.held.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if self.held.len() > MAX_HELD => self.held.len(),
            None => return Vec::new(),
        };
        let rest = self.held.split_off(cut);
        let ready = std::mem::replace(&mut self.held, rest);
        self.masker.mask_bytes(&ready)
    }

    /// Whatever is still held, masked.
    pub fn finish(&mut self) -> Vec<u8> {
        let held = std::mem::take(&mut self.held);
        self.masker.mask_bytes(&held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_their_lines_and_base64_forms_are_masked() {
        let masker = Masker::new(["hunter22", "line-one\nline-two", "ab"]);
        assert_eq!(masker.mask("pw=hunter22!"), "pw=***!");
        assert_eq!(masker.mask("x line-two y"), "x *** y");
        assert_eq!(masker.mask("line-one\nline-two"), "***");
        let b64 = STANDARD.encode("hunter22");
        assert_eq!(masker.mask(&format!("token {b64}")), "token ***");
        // Too short to mask.
        assert_eq!(masker.mask("ab"), "ab");
    }

    #[test]
    fn a_value_written_in_pieces_is_masked_once_its_line_ends() {
        let masker = Masker::new(["s3cr3t-value"]);
        let mut stream = masker.stream();
        let mut out = Vec::new();
        for piece in [
            "the key is s3c",
            "r3t-",
            "val",
            "ue\nnext line\nunfinished s3cr3t-v",
        ] {
            out.extend(stream.push(piece.as_bytes()));
        }
        out.extend(stream.push(b"alue"));
        out.extend(stream.finish());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "the key is ***\nnext line\nunfinished ***"
        );
    }

    #[test]
    fn without_secrets_bytes_pass_straight_through() {
        let mut stream = Masker::new([]).stream();
        assert_eq!(stream.push(b"partial"), b"partial");
    }
}
