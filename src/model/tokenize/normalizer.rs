//! Sentencepiece text normalization, reproduced byte for byte.
//!
//! `tokenizers`' `Precompiled` normalizer works per grapheme and takes the *shortest* rule
//! match, which differs from sentencepiece on stacked combining marks, Hangul jamo and
//! half-width kana. Sentencepiece instead scans the raw bytes and applies the *longest*
//! matching rule, then handles whitespace; that is what this module does.

use super::sentencepiece_model::NormalizerSpec;
use super::trie::{DoubleArray, PieceTrie};

/// "▁" (U+2581), sentencepiece's visible space.
pub(crate) const SPACE_SYMBOL: &str = "\u{2581}";

const REPLACEMENT_CHAR: &[u8] = "\u{FFFD}".as_bytes();

/// A decoded `precompiled_charsmap`: rewrite rules keyed by a byte trie.
#[derive(Debug, Clone)]
pub(crate) struct CharsMap {
    trie: DoubleArray,
    /// NUL-separated replacement strings; trie values are offsets into it.
    normalized: Vec<u8>,
}

impl CharsMap {
    /// Layout: u32 little-endian trie size in bytes, the trie, then the replacement strings.
    pub(crate) fn parse(blob: &[u8]) -> Result<Self, String> {
        if blob.len() <= 4 {
            return Err("precompiled_charsmap is too short".to_owned());
        }
        let trie_size = u32::from_le_bytes([blob[0], blob[1], blob[2], blob[3]]) as usize;
        let rest = &blob[4..];
        if trie_size > rest.len() {
            return Err(format!(
                "precompiled_charsmap trie size {trie_size} exceeds the {} bytes present",
                rest.len()
            ));
        }
        Ok(Self {
            trie: DoubleArray::from_le_bytes(&rest[..trie_size]),
            normalized: rest[trie_size..].to_vec(),
        })
    }

    /// The longest rule matching a prefix of `input`: (bytes consumed, replacement).
    fn lookup(&self, input: &[u8]) -> Result<Option<(usize, &[u8])>, String> {
        let Some((len, value)) = self.trie.longest_prefix(input) else {
            return Ok(None);
        };
        let start = value as usize;
        let tail = self
            .normalized
            .get(start..)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                format!("precompiled_charsmap rule points at offset {start}, past its strings")
            })?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        Ok(Some((len, &tail[..end])))
    }

    /// True when `tokenizers`' `Precompiled` normalizer can use this map without
    /// out-of-bounds accesses (it indexes without checks).
    pub(crate) fn safe_for_tokenizers(&self) -> bool {
        let Ok(text) = std::str::from_utf8(&self.normalized) else {
            return false;
        };
        self.trie.check_all_paths(|value| {
            let v = value as usize;
            v < text.len() && text.is_char_boundary(v)
        })
    }
}

/// Byte length of the UTF-8 character at the start of `bytes`, if it is well formed.
fn utf8_char_len(bytes: &[u8]) -> Option<usize> {
    let len = match *bytes.first()? {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        _ => return None,
    };
    let candidate = bytes.get(..len)?;
    std::str::from_utf8(candidate).ok().map(|_| len)
}

/// Sentencepiece's `Normalizer`.
#[derive(Debug, Clone)]
pub(crate) struct Normalizer {
    charsmap: Option<CharsMap>,
    /// User-defined symbols are copied verbatim, never rewritten.
    user_defined: Option<PieceTrie>,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    treat_whitespace_as_suffix: bool,
}

impl Normalizer {
    pub(crate) fn new(
        spec: &NormalizerSpec,
        treat_whitespace_as_suffix: bool,
        user_defined: Option<PieceTrie>,
    ) -> Result<Self, String> {
        let charsmap = if spec.precompiled_charsmap.is_empty() {
            None
        } else {
            Some(CharsMap::parse(&spec.precompiled_charsmap)?)
        };
        Ok(Self {
            charsmap,
            user_defined: user_defined.filter(|t| !t.is_empty()),
            add_dummy_prefix: spec.add_dummy_prefix,
            remove_extra_whitespaces: spec.remove_extra_whitespaces,
            escape_whitespaces: spec.escape_whitespaces,
            treat_whitespace_as_suffix,
        })
    }

    pub(crate) fn charsmap(&self) -> Option<&CharsMap> {
        self.charsmap.as_ref()
    }

    /// Normalizes the longest prefix of `input` that one rule covers:
    /// (normalized bytes, input bytes consumed).
    fn normalize_prefix<'a>(&'a self, input: &'a [u8]) -> Result<(&'a [u8], usize), String> {
        if let Some(len) = self
            .user_defined
            .as_ref()
            .and_then(|t| t.longest_prefix(input))
        {
            return Ok((&input[..len], len));
        }
        if let Some(map) = &self.charsmap {
            if let Some((len, replacement)) = map.lookup(input)? {
                return Ok((replacement, len));
            }
        }
        Ok(match utf8_char_len(input) {
            Some(len) => (&input[..len], len),
            // Only reachable when a rule ended inside a character; one byte becomes U+FFFD.
            None => (REPLACEMENT_CHAR, 1),
        })
    }

    /// Normalizes `input` the way `SentencePieceProcessor` does before segmentation.
    pub(crate) fn normalize(&self, input: &str) -> Result<String, String> {
        let mut rest = input.as_bytes();
        if self.remove_extra_whitespaces {
            while !rest.is_empty() {
                let (normalized, consumed) = self.normalize_prefix(rest)?;
                if normalized != b" " {
                    break;
                }
                rest = &rest[consumed..];
            }
        }
        if rest.is_empty() {
            return Ok(String::new());
        }
        let space: &[u8] = if self.escape_whitespaces {
            SPACE_SYMBOL.as_bytes()
        } else {
            b" "
        };
        let mut out: Vec<u8> = Vec::with_capacity(rest.len() * 3 / 2 + 3);
        if !self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        let mut is_prev_space = self.remove_extra_whitespaces;
        while !rest.is_empty() {
            let (mut piece, consumed) = self.normalize_prefix(rest)?;
            if is_prev_space {
                while let [b' ', tail @ ..] = piece {
                    piece = tail;
                }
            }
            if let Some(&last) = piece.last() {
                for &b in piece {
                    if b == b' ' {
                        out.extend_from_slice(space);
                    } else {
                        out.push(b);
                    }
                }
                is_prev_space = last == b' ';
            }
            rest = &rest[consumed..];
            if !self.remove_extra_whitespaces {
                is_prev_space = false;
            }
        }
        if self.remove_extra_whitespaces {
            while out.ends_with(space) {
                out.truncate(out.len() - space.len());
            }
        }
        if self.treat_whitespace_as_suffix && self.add_dummy_prefix {
            out.extend_from_slice(space);
        }
        String::from_utf8(out).map_err(|_| "normalization rules produced invalid UTF-8".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(add_dummy_prefix: bool, remove_extra: bool) -> Normalizer {
        let spec = NormalizerSpec {
            add_dummy_prefix,
            remove_extra_whitespaces: remove_extra,
            ..NormalizerSpec::default()
        };
        Normalizer::new(&spec, false, None).unwrap()
    }

    #[test]
    fn whitespace_rules() {
        let n = identity(true, true);
        assert_eq!(n.normalize("  a  b  ").unwrap(), "▁a▁b");
        assert_eq!(n.normalize("   ").unwrap(), "");
        assert_eq!(n.normalize("").unwrap(), "");
        let raw = identity(false, false);
        assert_eq!(raw.normalize(" a  b ").unwrap(), "▁a▁▁b▁");
    }

    #[test]
    fn user_defined_symbols_are_kept_whole() {
        let trie = PieceTrie::build([("a b".as_bytes(), 0)]);
        let spec = NormalizerSpec::default();
        let n = Normalizer::new(&spec, false, Some(trie)).unwrap();
        // The user-defined symbol's inner space is not a separator, but it is still escaped.
        assert_eq!(n.normalize("xa b").unwrap(), "▁xa▁b");
    }

    #[test]
    fn malformed_charsmap_is_rejected() {
        assert!(CharsMap::parse(&[1, 0, 0]).is_err());
        assert!(CharsMap::parse(&[200, 0, 0, 0, 1, 2]).is_err());
    }
}
