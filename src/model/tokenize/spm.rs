//! A sentencepiece unigram processor: encoding to piece strings and decoding piece strings,
//! matching the behaviour of `sentencepiece.SentencePieceProcessor` (0.2.x).

use std::collections::HashMap;

use super::normalizer::{Normalizer, SPACE_SYMBOL};
use super::sentencepiece_model::{ModelProto, PieceType};
use super::trie::PieceTrie;

/// Sentencepiece's penalty, below the lowest piece score, for one unknown character.
const UNK_PENALTY: f32 = 10.0;

#[derive(Debug, Clone)]
struct Piece {
    text: String,
    score: f32,
    kind: PieceType,
}

/// Parses `<0xAB>` (upper-case hex, exactly as sentencepiece writes it).
fn piece_to_byte(piece: &str) -> Option<u8> {
    let hex = piece.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
    {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// One loaded sentencepiece model.
#[derive(Debug, Clone)]
pub(crate) struct SentencePieceModel {
    pieces: Vec<Piece>,
    /// sentencepiece's `PieceToId`: control/unknown/byte pieces shadow normal ones.
    piece_to_id: HashMap<String, u32>,
    unk_id: u32,
    /// Normal and user-defined pieces: the ones segmentation can produce. (Unused pieces
    /// are matched but ignored by sentencepiece, which is the same as leaving them out.)
    trie: PieceTrie,
    /// Lattice score of each piece, indexed by id (user-defined pieces get their bonus).
    lattice_scores: Vec<f32>,
    min_score: f32,
    byte_fallback: bool,
    normalizer: Normalizer,
    denormalizer: Option<Normalizer>,
    unk_surface: String,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
}

/// One step of the best path ending at a byte position.
#[derive(Clone, Copy)]
struct BestPath {
    score: f32,
    starts_at: usize,
    id: u32,
    set: bool,
}

impl SentencePieceModel {
    /// Validates the model the way `SentencePieceProcessor::Load` does.
    pub(crate) fn new(proto: &ModelProto) -> Result<Self, String> {
        if proto.trainer_spec.model_type != 1 {
            return Err(format!(
                "model type {} is not supported (only unigram, type 1)",
                proto.trainer_spec.model_type
            ));
        }
        let byte_fallback = proto.trainer_spec.byte_fallback;
        let mut normal: HashMap<&str, u32> = HashMap::new();
        let mut reserved: HashMap<&str, u32> = HashMap::new();
        let mut unk_id = None;
        let mut bytes_seen = [false; 256];
        let mut pieces = Vec::with_capacity(proto.pieces.len());
        for (i, p) in proto.pieces.iter().enumerate() {
            let id = u32::try_from(i).map_err(|_| "too many pieces".to_owned())?;
            if p.piece.is_empty() {
                return Err(format!("piece {id} is empty"));
            }
            let table = match p.kind {
                PieceType::Normal | PieceType::UserDefined | PieceType::Unused => &mut normal,
                _ => &mut reserved,
            };
            if table.insert(p.piece.as_str(), id).is_some() {
                return Err(format!("piece {:?} is defined twice", p.piece));
            }
            if p.kind == PieceType::Unknown && unk_id.replace(id).is_some() {
                return Err("more than one unknown piece".to_owned());
            }
            if p.kind == PieceType::Byte {
                if !byte_fallback {
                    return Err(format!(
                        "byte piece {:?} found although byte_fallback is off",
                        p.piece
                    ));
                }
                let b = piece_to_byte(&p.piece)
                    .ok_or_else(|| format!("invalid byte piece {:?}", p.piece))?;
                bytes_seen[usize::from(b)] = true;
            }
            pieces.push(Piece {
                text: p.piece.clone(),
                score: p.score,
                kind: p.kind,
            });
        }
        let unk_id = unk_id.ok_or_else(|| "the model defines no unknown piece".to_owned())?;
        if byte_fallback && bytes_seen.iter().any(|seen| !seen) {
            return Err("byte_fallback is on but not all 256 byte pieces exist".to_owned());
        }

        // Score range over normal pieces only, with sentencepiece's float sentinels.
        let mut min_score = f32::MAX;
        let mut max_score = f32::MIN_POSITIVE;
        for p in pieces.iter().filter(|p| p.kind == PieceType::Normal) {
            min_score = min_score.min(p.score);
            max_score = max_score.max(p.score);
        }

        let trie = PieceTrie::build(
            normal
                .iter()
                .filter(|(_, &id)| pieces[id as usize].kind != PieceType::Unused)
                .map(|(k, &v)| (k.as_bytes(), v)),
        );
        // User-defined symbols always win: sentencepiece scores them as
        // `length * max_score - 0.1` (in double, stored as float).
        let lattice_scores = pieces
            .iter()
            .map(|p| match p.kind {
                PieceType::UserDefined => (f64::from(p.text.len() as f32 * max_score) - 0.1) as f32,
                _ => p.score,
            })
            .collect();
        let user_defined = PieceTrie::build(
            pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kind == PieceType::UserDefined)
                .map(|(i, p)| (p.text.as_bytes(), i as u32)),
        );
        let mut piece_to_id: HashMap<String, u32> =
            normal.iter().map(|(k, &v)| ((*k).to_owned(), v)).collect();
        for (k, &v) in &reserved {
            piece_to_id.insert((*k).to_owned(), v);
        }

        let ws_suffix = proto.trainer_spec.treat_whitespace_as_suffix;
        let normalizer = Normalizer::new(&proto.normalizer_spec, ws_suffix, Some(user_defined))?;
        let denormalizer = match &proto.denormalizer_spec {
            Some(spec) if !spec.precompiled_charsmap.is_empty() => {
                Some(Normalizer::new(spec, false, None)?)
            }
            _ => None,
        };
        Ok(Self {
            pieces,
            piece_to_id,
            unk_id,
            trie,
            lattice_scores,
            min_score,
            byte_fallback,
            normalizer,
            denormalizer,
            unk_surface: proto.trainer_spec.unk_surface.clone(),
            add_dummy_prefix: proto.normalizer_spec.add_dummy_prefix,
            remove_extra_whitespaces: proto.normalizer_spec.remove_extra_whitespaces,
        })
    }

    pub(crate) fn normalizer(&self) -> &Normalizer {
        &self.normalizer
    }

    pub(crate) fn piece_count(&self) -> usize {
        self.pieces.len()
    }

    /// `IdToPiece`; `None` when the id is out of range.
    pub(crate) fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(|p| p.text.as_str())
    }

    /// (piece, score, type) of every entry, in id order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = (&str, f32, PieceType)> {
        self.pieces
            .iter()
            .map(|p| (p.text.as_str(), p.score, p.kind))
    }

    pub(crate) fn unk_id(&self) -> u32 {
        self.unk_id
    }

    pub(crate) fn byte_fallback(&self) -> bool {
        self.byte_fallback
    }

    fn kind(&self, id: u32) -> PieceType {
        self.pieces
            .get(id as usize)
            .map_or(PieceType::Unknown, |p| p.kind)
    }

    /// Sentencepiece's optimized Viterbi over the normalized string. Path scores are
    /// accumulated and compared in `f32`, first candidate kept on ties: checked against
    /// sentencepiece 0.2.3, whose tie-breaking this reproduces (an `f64` lattice, as in
    /// `tokenizers`, picks the other segmentation on near-ties such as "..." = "." + "..").
    fn segment(&self, normalized: &str) -> Vec<(usize, usize, u32)> {
        let text = normalized.as_bytes();
        let size = text.len();
        if size == 0 {
            return Vec::new();
        }
        let unk_score = self.min_score - UNK_PENALTY;
        let mut best = vec![
            BestPath {
                score: 0.0,
                starts_at: 0,
                id: 0,
                set: false,
            };
            size + 1
        ];
        let mut starts_at = 0;
        while starts_at < size {
            let till_here = best[starts_at].score;
            let mblen = normalized[starts_at..]
                .chars()
                .next()
                .map_or(1, char::len_utf8);
            let mut has_single_node = false;
            self.trie.for_each_prefix(&text[starts_at..], |length, id| {
                let score = self.lattice_scores[id as usize];
                let candidate = score + till_here;
                let target = &mut best[starts_at + length];
                if !target.set || candidate > target.score {
                    *target = BestPath {
                        score: candidate,
                        starts_at,
                        id,
                        set: true,
                    };
                }
                if length == mblen {
                    has_single_node = true;
                }
            });
            if !has_single_node {
                let candidate = unk_score + till_here;
                let target = &mut best[starts_at + mblen];
                if !target.set || candidate > target.score {
                    *target = BestPath {
                        score: candidate,
                        starts_at,
                        id: self.unk_id,
                        set: true,
                    };
                }
            }
            starts_at += mblen;
        }
        let mut path = Vec::new();
        let mut end = size;
        while end > 0 {
            let node = best[end];
            path.push((node.starts_at, end, node.id));
            end = node.starts_at;
        }
        path.reverse();
        path
    }

    /// `encode(text, out_type=str)`: calls `emit` with each piece string in order.
    /// Runs of unknown characters come out as one piece holding their normalized text
    /// (or as `<0xNN>` byte pieces when the model has byte fallback).
    pub(crate) fn encode_with(&self, text: &str, mut emit: impl FnMut(&str)) -> Result<(), String> {
        let normalized = self.normalizer.normalize(text)?;
        let path = self.segment(&normalized);
        let mut pending_unk: Option<(usize, usize)> = None;
        for (start, end, id) in path {
            let is_unk = id == self.unk_id;
            if is_unk && self.byte_fallback {
                for b in normalized[start..end].bytes() {
                    emit(&format!("<0x{b:02X}>"));
                }
                continue;
            }
            if is_unk {
                pending_unk = Some(match pending_unk {
                    Some((s, _)) => (s, end),
                    None => (start, end),
                });
                continue;
            }
            if let Some((s, e)) = pending_unk.take() {
                emit(&normalized[s..e]);
            }
            emit(&normalized[start..end]);
        }
        if let Some((s, e)) = pending_unk {
            emit(&normalized[s..e]);
        }
        Ok(())
    }

    /// `decode_pieces(pieces)`.
    pub(crate) fn decode_pieces<S: AsRef<str>>(&self, pieces: &[S]) -> Result<String, String> {
        let mut text = String::new();
        let mut pending_bytes: Vec<u8> = Vec::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        for piece in pieces {
            let piece = piece.as_ref();
            let id = self.piece_to_id.get(piece).copied().unwrap_or(self.unk_id);
            let kind = self.kind(id);
            if kind == PieceType::Byte {
                pending_bytes.push(piece_to_byte(piece).ok_or("invalid byte piece")?);
                continue;
            }
            flush_bytes(&mut pending_bytes, &mut text);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match kind {
                // Control symbols such as <s> and </s> print nothing.
                PieceType::Control => {}
                PieceType::Unknown => {
                    if self.id_to_piece(id) == Some(piece) {
                        text.push_str(&self.unk_surface);
                    } else {
                        // A piece the model does not know is printed as it is.
                        text.push_str(piece);
                    }
                }
                _ => {
                    let mut rest = piece;
                    if is_bos_ws && (self.add_dummy_prefix || self.remove_extra_whitespaces) {
                        if let Some(stripped) = rest.strip_prefix(SPACE_SYMBOL) {
                            rest = stripped;
                            // With whitespace removal every leading space goes, so keep
                            // treating the next piece as the first one.
                            bos_ws_seen = !self.remove_extra_whitespaces;
                        }
                    }
                    text.push_str(&rest.replace(SPACE_SYMBOL, " "));
                }
            }
        }
        flush_bytes(&mut pending_bytes, &mut text);
        match &self.denormalizer {
            Some(d) => d.normalize(&text),
            None => Ok(text),
        }
    }
}

/// Appends byte-fallback bytes as text: each well-formed UTF-8 character as itself and
/// each byte that does not start one as U+FFFD.
fn flush_bytes(bytes: &mut Vec<u8>, out: &mut String) {
    let mut rest: &[u8] = bytes;
    while !rest.is_empty() {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                break;
            }
            Err(e) => {
                let valid = e.valid_up_to();
                // Safe: `valid_up_to` marks a well-formed prefix.
                out.push_str(std::str::from_utf8(&rest[..valid]).unwrap_or_default());
                out.push('\u{FFFD}');
                rest = &rest[valid + 1..];
            }
        }
    }
    bytes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_pieces_parse_only_in_canonical_form() {
        assert_eq!(piece_to_byte("<0x41>"), Some(0x41));
        assert_eq!(piece_to_byte("<0xFF>"), Some(0xff));
        assert_eq!(piece_to_byte("<0xff>"), None);
        assert_eq!(piece_to_byte("<0x4>"), None);
        assert_eq!(piece_to_byte("<0x+4>"), None);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut out = String::new();
        let mut bytes = vec![0xe3, 0x82, b'a', 0xe3, 0x82, 0xa2, 0xff];
        flush_bytes(&mut bytes, &mut out);
        assert_eq!(out, "\u{FFFD}\u{FFFD}aア\u{FFFD}");
        assert!(bytes.is_empty());
    }
}
