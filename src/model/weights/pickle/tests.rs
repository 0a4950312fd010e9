//! Tests of the restricted unpickler: protocol 4 frames and memo, wide longs, the global
//! allow-list, escaping, depth and copy-work bounds, truncation.

use super::unpickler::decode_long;
use super::*;

fn malformed(data: &[u8]) -> String {
    match load(data) {
        Err(PickleError::Malformed { reason, .. }) => reason,
        Err(other) => panic!("expected a malformed-pickle error, got {other:?}"),
        Ok(l) => panic!("expected an error, got a {}", l.value.kind()),
    }
}

#[test]
fn reads_protocol_4_with_frames_and_memoize() {
    // pickle.dumps({'a': [1, -70000, 2**70, True, None, 1.5, b'xy']}, protocol=4)
    let data = b"\x80\x04\x95.\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94]\x94(K\x01J\x90\xee\xfe\xff\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x88NG?\xf8\x00\x00\x00\x00\x00\x00C\x02xy\x94es.";
    let loaded = load(data).expect("valid pickle");
    assert_eq!(loaded.len, data.len());
    let Value::Dict(map) = loaded.value else {
        panic!("not a dict")
    };
    assert_eq!(map.items.len(), 1);
    let (Value::Str(k), Value::List(list)) = &map.items[0] else {
        panic!("unexpected item kinds")
    };
    assert_eq!(&**k, "a");
    let kinds: Vec<&str> = list.items.iter().map(Value::kind).collect();
    assert_eq!(
        kinds,
        ["int", "int", "int", "bool", "None", "float", "bytes"]
    );
    assert!(matches!(list.items[0], Value::Int(1)));
    assert!(matches!(list.items[1], Value::Int(-70000)));
    assert!(matches!(list.items[2], Value::BigInt(_)));
}

#[test]
fn long1_decodes_small_and_wide_values() {
    assert!(matches!(decode_long(&[]), Value::Int(0)));
    assert!(matches!(decode_long(&[0xff]), Value::Int(-1)));
    assert!(matches!(decode_long(&[0x00, 0x80]), Value::Int(-32768)));
    // Nine bytes holding a value that fits in i64 (redundant sign byte).
    assert!(matches!(
        decode_long(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
        Value::Int(-2)
    ));
    assert!(matches!(
        decode_long(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0x00]),
        Value::BigInt(_)
    ));
}

#[test]
fn stack_global_outside_allow_list_is_refused() {
    // protocol 4: 'builtins' 'eval' STACK_GLOBAL, then a call
    let data = b"\x80\x04\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94\x8c\x011\x85R.";
    match load(data) {
        Err(PickleError::ForbiddenGlobal { module, name }) => {
            assert_eq!((module.as_str(), name.as_str()), ("builtins", "eval"));
        }
        other => panic!("expected ForbiddenGlobal, got {other:?}"),
    }
}

#[test]
fn allowed_globals_cannot_be_misused() {
    // OrderedDict with an argument, and a storage class called directly.
    let data = b"\x80\x02ccollections\nOrderedDict\n]\x85R.";
    assert!(malformed(data).contains("OrderedDict"));
    let data = b"\x80\x02ctorch\nFloatStorage\n)R.";
    assert!(malformed(data).contains("FloatStorage"));
}

#[test]
fn control_characters_in_names_are_escaped() {
    let data = b"\x80\x02cos\x1b[31m\nsystem\n.";
    match load(data) {
        Err(PickleError::ForbiddenGlobal { module, .. }) => {
            assert!(!module.contains('\x1b'), "{module:?}");
            assert!(module.starts_with("os"));
        }
        other => panic!("expected ForbiddenGlobal, got {other:?}"),
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let mut data = b"\x80\x02)".to_vec();
    data.extend(std::iter::repeat_n(0x85u8, 100_000)); // TUPLE1
    data.push(b'.');
    assert!(malformed(&data).contains("nested"));

    let mut data = b"\x80\x02".to_vec();
    data.extend(std::iter::repeat_n(b'(', 100_000)); // MARK
    data.push(b'N');
    data.extend(std::iter::repeat_n(b'l', 100_000)); // LIST
    data.push(b'.');
    assert!(malformed(&data).contains("nested"));
}

#[test]
fn memo_doubling_shares_instead_of_copying() {
    // x = (x, x) sixty times: 2^60 leaves if copied, 60 nodes when shared.
    let mut data = b"\x80\x02]q\x00".to_vec();
    for _ in 0..60 {
        // TUPLE2 of (top of stack, memo[0]), stored back as memo[0].
        data.extend_from_slice(b"h\x00\x86q\x00");
    }
    data.push(b'.');
    let loaded = load(&data).expect("shared structure loads");
    assert_eq!(loaded.value.kind(), "tuple");
    assert_eq!(loaded.value.depth(), 61);
}

#[test]
fn copy_on_write_work_is_bounded() {
    // PUT then APPEND, over and over: each append would copy the whole list.
    let mut data = b"\x80\x02]".to_vec();
    for _ in 0..100_000 {
        data.extend_from_slice(b"q\x00K\x01a");
    }
    data.push(b'.');
    assert!(malformed(&data).contains("copies too much"));
}

#[test]
fn memo_read_before_write_is_an_error() {
    assert!(malformed(b"\x80\x02h\x05.").contains("memo"));
}

#[test]
fn every_truncation_reports_truncated() {
    let data = b"\x80\x04\x95.\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x01a\x94]\x94(K\x01J\x90\xee\xfe\xff\x8a\t\x00\x00\x00\x00\x00\x00\x00\x00@\x88NG?\xf8\x00\x00\x00\x00\x00\x00C\x02xy\x94es.";
    for len in 0..data.len() {
        assert!(
            matches!(load(&data[..len]), Err(PickleError::Truncated)),
            "length {len}"
        );
    }
}
