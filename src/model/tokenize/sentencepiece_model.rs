//! Reader for serialized `sentencepiece.ModelProto` messages (`*.spm` / `*.model` files).
//!
//! Only the protobuf wire format is needed: varints, fixed32/fixed64 and length-delimited
//! fields. Fields this crate does not use are skipped; structurally broken input (truncated
//! varints, lengths past the end, bad wire types, unbalanced groups) is an error.

/// Structural error in a protobuf message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("truncated varint at byte {0}")]
    TruncatedVarint(usize),
    #[error("varint longer than 64 bits at byte {0}")]
    VarintOverflow(usize),
    #[error("field at byte {offset} needs {needed} bytes but only {available} remain")]
    PastEnd {
        offset: usize,
        needed: u64,
        available: usize,
    },
    #[error("invalid wire type {wire_type} at byte {offset}")]
    InvalidWireType { wire_type: u8, offset: usize },
    #[error("invalid field number 0 at byte {0}")]
    InvalidFieldNumber(usize),
    #[error("unbalanced group at byte {0}")]
    UnbalancedGroup(usize),
    #[error("groups nested too deeply at byte {0}")]
    TooDeep(usize),
    #[error("field {field} of {message} is not valid UTF-8")]
    InvalidUtf8 { message: &'static str, field: u32 },
}

const MAX_GROUP_DEPTH: usize = 64;

const WIRE_VARINT: u8 = 0;
const WIRE_FIXED64: u8 = 1;
const WIRE_LEN: u8 = 2;
const WIRE_START_GROUP: u8 = 3;
const WIRE_END_GROUP: u8 = 4;
const WIRE_FIXED32: u8 = 5;

/// Cursor over one protobuf message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&byte) = self.buf.get(self.pos) else {
                return Err(ProtoError::TruncatedVarint(start));
            };
            self.pos += 1;
            // The tenth byte may only contribute the top bit of a u64.
            if i == 9 && byte > 1 {
                return Err(ProtoError::VarintOverflow(start));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::VarintOverflow(start))
    }

    /// Reads a field key: (field number, wire type).
    fn key(&mut self) -> Result<(u32, u8), ProtoError> {
        let offset = self.pos;
        let key = self.varint()?;
        let wire_type = (key & 7) as u8;
        let field = key >> 3;
        if field == 0 {
            return Err(ProtoError::InvalidFieldNumber(offset));
        }
        let field = u32::try_from(field).map_err(|_| ProtoError::InvalidFieldNumber(offset))?;
        Ok((field, wire_type))
    }

    fn take(&mut self, needed: u64) -> Result<&'a [u8], ProtoError> {
        let available = self.buf.len() - self.pos;
        let n = usize::try_from(needed)
            .ok()
            .filter(|&n| n <= available)
            .ok_or(ProtoError::PastEnd {
                offset: self.pos,
                needed,
                available,
            })?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn len_delimited(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = self.varint()?;
        self.take(len)
    }

    fn fixed32(&mut self) -> Result<u32, ProtoError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// Skips the value of a field whose key was just read.
    fn skip(&mut self, field: u32, wire_type: u8, depth: usize) -> Result<(), ProtoError> {
        match wire_type {
            WIRE_VARINT => self.varint().map(drop),
            WIRE_FIXED64 => self.take(8).map(drop),
            WIRE_LEN => self.len_delimited().map(drop),
            WIRE_FIXED32 => self.take(4).map(drop),
            WIRE_START_GROUP => {
                if depth >= MAX_GROUP_DEPTH {
                    return Err(ProtoError::TooDeep(self.pos));
                }
                loop {
                    let offset = self.pos;
                    if self.at_end() {
                        return Err(ProtoError::UnbalancedGroup(offset));
                    }
                    let (inner, inner_wire) = self.key()?;
                    if inner_wire == WIRE_END_GROUP {
                        if inner == field {
                            return Ok(());
                        }
                        return Err(ProtoError::UnbalancedGroup(offset));
                    }
                    self.skip(inner, inner_wire, depth + 1)?;
                }
            }
            WIRE_END_GROUP => Err(ProtoError::UnbalancedGroup(self.pos)),
            other => Err(ProtoError::InvalidWireType {
                wire_type: other,
                offset: self.pos,
            }),
        }
    }
}

/// Iterates over the fields of a message, handing each known field to `on_field`.
/// `on_field` returns `Ok(false)` when it does not handle the (field, wire type)
/// combination, and the value is then skipped like an unknown field.
fn for_each_field<'a>(
    buf: &'a [u8],
    mut on_field: impl FnMut(u32, u8, &mut Reader<'a>) -> Result<bool, ProtoError>,
) -> Result<(), ProtoError> {
    let mut reader = Reader::new(buf);
    while !reader.at_end() {
        let (field, wire_type) = reader.key()?;
        if wire_type == WIRE_END_GROUP {
            return Err(ProtoError::UnbalancedGroup(reader.pos));
        }
        if !on_field(field, wire_type, &mut reader)? {
            reader.skip(field, wire_type, 0)?;
        }
    }
    Ok(())
}

fn utf8(bytes: &[u8], message: &'static str, field: u32) -> Result<String, ProtoError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtoError::InvalidUtf8 { message, field })
}

/// Kind of a vocabulary entry (`ModelProto.SentencePiece.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceType {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceType {
    /// proto2 keeps an unrecognised enum value out of the field, so it stays at its default.
    fn from_wire(value: u64, current: PieceType) -> PieceType {
        match value {
            1 => PieceType::Normal,
            2 => PieceType::Unknown,
            3 => PieceType::Control,
            4 => PieceType::UserDefined,
            5 => PieceType::Unused,
            6 => PieceType::Byte,
            _ => current,
        }
    }
}

/// One vocabulary entry.
#[derive(Debug, Clone, PartialEq)]
pub struct SentencePiece {
    pub piece: String,
    pub score: f32,
    pub kind: PieceType,
}

impl Default for SentencePiece {
    fn default() -> Self {
        Self {
            piece: String::new(),
            score: 0.0,
            kind: PieceType::Normal,
        }
    }
}

/// The subset of `TrainerSpec` that affects encoding and decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSpec {
    /// 1 = unigram, 2 = BPE, 3 = word, 4 = char.
    pub model_type: i32,
    pub vocab_size: i32,
    pub treat_whitespace_as_suffix: bool,
    pub byte_fallback: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub unk_piece: String,
    pub bos_piece: String,
    pub eos_piece: String,
    pub pad_piece: String,
    /// Text that decoding prints for `<unk>`.
    pub unk_surface: String,
}

impl Default for TrainerSpec {
    fn default() -> Self {
        Self {
            model_type: 1,
            vocab_size: 8000,
            treat_whitespace_as_suffix: false,
            byte_fallback: false,
            unk_id: 0,
            bos_id: 1,
            eos_id: 2,
            pad_id: -1,
            unk_piece: "<unk>".to_owned(),
            bos_piece: "<s>".to_owned(),
            eos_piece: "</s>".to_owned(),
            pad_piece: "<pad>".to_owned(),
            unk_surface: " \u{2047} ".to_owned(),
        }
    }
}

/// `NormalizerSpec`: how raw text becomes the string the model segments.
#[derive(Debug, Clone, PartialEq)]
pub struct NormalizerSpec {
    pub name: String,
    /// Serialized double-array trie plus replacement strings; empty means identity.
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

impl Default for NormalizerSpec {
    fn default() -> Self {
        Self {
            name: String::new(),
            precompiled_charsmap: Vec::new(),
            add_dummy_prefix: true,
            remove_extra_whitespaces: true,
            escape_whitespaces: true,
        }
    }
}

/// A parsed `sentencepiece.ModelProto`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelProto {
    pub pieces: Vec<SentencePiece>,
    pub trainer_spec: TrainerSpec,
    pub normalizer_spec: NormalizerSpec,
    /// Present only when the model defines a denormalization rule set.
    pub denormalizer_spec: Option<NormalizerSpec>,
}

fn as_i32(v: u64) -> i32 {
    // int32 fields are sign-extended to 64 bits on the wire; truncation recovers them.
    v as i32
}

impl ModelProto {
    /// Parses the bytes of a `.spm` / `.model` file.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtoError> {
        let mut model = ModelProto::default();
        for_each_field(bytes, |field, wire, r| {
            match (field, wire) {
                (1, WIRE_LEN) => {
                    let mut piece = SentencePiece::default();
                    merge_piece(r.len_delimited()?, &mut piece)?;
                    model.pieces.push(piece);
                }
                // Repeated occurrences of an embedded message merge, as in protobuf.
                (2, WIRE_LEN) => merge_trainer_spec(r.len_delimited()?, &mut model.trainer_spec)?,
                (3, WIRE_LEN) => {
                    merge_normalizer_spec(r.len_delimited()?, &mut model.normalizer_spec)?
                }
                (5, WIRE_LEN) => {
                    let spec = model.denormalizer_spec.get_or_insert_with(Default::default);
                    merge_normalizer_spec(r.len_delimited()?, spec)?
                }
                _ => return Ok(false),
            }
            Ok(true)
        })?;
        Ok(model)
    }
}

fn merge_piece(buf: &[u8], piece: &mut SentencePiece) -> Result<(), ProtoError> {
    const MSG: &str = "SentencePiece";
    for_each_field(buf, |field, wire, r| {
        match (field, wire) {
            (1, WIRE_LEN) => piece.piece = utf8(r.len_delimited()?, MSG, 1)?,
            (2, WIRE_FIXED32) => piece.score = f32::from_bits(r.fixed32()?),
            (3, WIRE_VARINT) => piece.kind = PieceType::from_wire(r.varint()?, piece.kind),
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn merge_trainer_spec(buf: &[u8], spec: &mut TrainerSpec) -> Result<(), ProtoError> {
    const MSG: &str = "TrainerSpec";
    for_each_field(buf, |field, wire, r| {
        match (field, wire) {
            (3, WIRE_VARINT) => spec.model_type = as_i32(r.varint()?),
            (4, WIRE_VARINT) => spec.vocab_size = as_i32(r.varint()?),
            (24, WIRE_VARINT) => spec.treat_whitespace_as_suffix = r.varint()? != 0,
            (35, WIRE_VARINT) => spec.byte_fallback = r.varint()? != 0,
            (40, WIRE_VARINT) => spec.unk_id = as_i32(r.varint()?),
            (41, WIRE_VARINT) => spec.bos_id = as_i32(r.varint()?),
            (42, WIRE_VARINT) => spec.eos_id = as_i32(r.varint()?),
            (43, WIRE_VARINT) => spec.pad_id = as_i32(r.varint()?),
            (44, WIRE_LEN) => spec.unk_surface = utf8(r.len_delimited()?, MSG, 44)?,
            (45, WIRE_LEN) => spec.unk_piece = utf8(r.len_delimited()?, MSG, 45)?,
            (46, WIRE_LEN) => spec.bos_piece = utf8(r.len_delimited()?, MSG, 46)?,
            (47, WIRE_LEN) => spec.eos_piece = utf8(r.len_delimited()?, MSG, 47)?,
            (48, WIRE_LEN) => spec.pad_piece = utf8(r.len_delimited()?, MSG, 48)?,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

fn merge_normalizer_spec(buf: &[u8], spec: &mut NormalizerSpec) -> Result<(), ProtoError> {
    const MSG: &str = "NormalizerSpec";
    for_each_field(buf, |field, wire, r| {
        match (field, wire) {
            (1, WIRE_LEN) => spec.name = utf8(r.len_delimited()?, MSG, 1)?,
            (2, WIRE_LEN) => spec.precompiled_charsmap = r.len_delimited()?.to_vec(),
            (3, WIRE_VARINT) => spec.add_dummy_prefix = r.varint()? != 0,
            (4, WIRE_VARINT) => spec.remove_extra_whitespaces = r.varint()? != 0,
            (5, WIRE_VARINT) => spec.escape_whitespaces = r.varint()? != 0,
            _ => return Ok(false),
        }
        Ok(true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn len_field(field: u32, payload: &[u8], out: &mut Vec<u8>) {
        varint(u64::from(field) << 3 | 2, out);
        varint(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }

    #[test]
    fn parses_piece_and_specs() {
        let mut piece = Vec::new();
        len_field(1, "▁ab".as_bytes(), &mut piece);
        varint(2 << 3 | 5, &mut piece);
        piece.extend_from_slice(&(-1.5f32).to_le_bytes());
        varint(3 << 3, &mut piece);
        varint(4, &mut piece);
        let mut trainer = Vec::new();
        varint(35 << 3, &mut trainer);
        varint(1, &mut trainer);
        varint(43 << 3, &mut trainer);
        varint(u64::MAX, &mut trainer); // -1 as a sign-extended int32
        let mut model = Vec::new();
        len_field(1, &piece, &mut model);
        len_field(2, &trainer, &mut model);
        // Unknown fields of every wire type are skipped.
        varint(9 << 3, &mut model);
        varint(300, &mut model);
        varint(10 << 3 | 1, &mut model);
        model.extend_from_slice(&[0; 8]);
        varint(11 << 3 | 3, &mut model);
        varint(1 << 3, &mut model);
        varint(7, &mut model);
        varint(11 << 3 | 4, &mut model);
        let parsed = ModelProto::parse(&model).unwrap();
        assert_eq!(parsed.pieces.len(), 1);
        assert_eq!(parsed.pieces[0].piece, "▁ab");
        assert_eq!(parsed.pieces[0].score, -1.5);
        assert_eq!(parsed.pieces[0].kind, PieceType::UserDefined);
        assert!(parsed.trainer_spec.byte_fallback);
        assert_eq!(parsed.trainer_spec.pad_id, -1);
        assert!(parsed.normalizer_spec.add_dummy_prefix);
    }

    #[test]
    fn rejects_unbalanced_group() {
        let mut model = Vec::new();
        varint(11 << 3 | 3, &mut model);
        varint(12 << 3 | 4, &mut model);
        assert!(matches!(
            ModelProto::parse(&model),
            Err(ProtoError::UnbalancedGroup(_))
        ));
    }
}
