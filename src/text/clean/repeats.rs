//! Rules for repeated lines: a line repeating the title, and later copies of a kept line.

use std::collections::HashSet;

use super::{normalize_key, RemovalReason, Unit};

/// Lines repeating the title are duplicates.
pub(super) fn mark_title_repeat(units: &mut [Unit], title: &str) {
    if title.is_empty() {
        return;
    }
    let key = normalize_key(title);
    for u in units.iter_mut() {
        if !u.removed.is_some_and(RemovalReason::is_specific) && normalize_key(&u.text) == key {
            u.removed = Some(RemovalReason::Duplicate);
        }
    }
}
/// Later copies of a kept line go (captions printed twice).
pub(super) fn mark_duplicates(units: &mut [Unit]) {
    let mut seen = HashSet::new();
    for u in units.iter_mut() {
        if u.removed.is_some() {
            continue;
        }
        if !seen.insert(normalize_key(&u.text)) {
            u.removed = Some(RemovalReason::Duplicate);
        }
    }
}
