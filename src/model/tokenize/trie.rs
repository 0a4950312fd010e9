//! Byte tries used by the sentencepiece emulation.
//!
//! * [`DoubleArray`] reads the darts-clone double array stored in a model's
//!   `precompiled_charsmap`; every access is bounds-checked because the array comes from a file.
//! * [`PieceTrie`] is built here from vocabulary pieces (for Viterbi segmentation and for
//!   matching user-defined symbols).

/// A darts-clone double array (32-bit units), as serialized by sentencepiece.
#[derive(Debug, Clone)]
pub(crate) struct DoubleArray {
    units: Vec<u32>,
}

fn unit_offset(unit: u32) -> usize {
    ((unit >> 10) << ((unit & (1 << 9)) >> 6)) as usize
}

fn unit_label(unit: u32) -> u32 {
    unit & ((1 << 31) | 0xff)
}

fn unit_has_leaf(unit: u32) -> bool {
    (unit >> 8) & 1 == 1
}

fn unit_value(unit: u32) -> u32 {
    unit & 0x7fff_ffff
}

impl DoubleArray {
    pub(crate) fn from_le_bytes(bytes: &[u8]) -> Self {
        let units = bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Self { units }
    }

    /// Longest key that is a prefix of `key`: (its length in bytes, its value).
    pub(crate) fn longest_prefix(&self, key: &[u8]) -> Option<(usize, u32)> {
        let mut best = None;
        let mut id = unit_offset(*self.units.first()?);
        for (i, &byte) in key.iter().enumerate() {
            id ^= usize::from(byte);
            let unit = *self.units.get(id)?;
            if unit_label(unit) != u32::from(byte) {
                break;
            }
            id ^= unit_offset(unit);
            if unit_has_leaf(unit) {
                match self.units.get(id) {
                    Some(&leaf) => best = Some((i + 1, unit_value(leaf))),
                    None => break,
                }
            }
        }
        best
    }

    /// Calls `visit(value)` for every leaf reachable from the root, and checks that a
    /// traversal by *any* byte sequence stays inside the array. Returns false if some
    /// reachable access would fall outside it (a malformed array).
    pub(crate) fn check_all_paths(&self, mut visit: impl FnMut(u32) -> bool) -> bool {
        let Some(&root) = self.units.first() else {
            return false;
        };
        let len = self.units.len();
        // darts-clone stores a DAWG: suffixes are shared, so nodes can be reached by
        // several paths (and a malicious array could even loop). Check each base once.
        let mut seen = vec![false; len];
        let mut stack = vec![unit_offset(root)];
        while let Some(base) = stack.pop() {
            // Lookups XOR the node base with any byte, so all 256 slots must exist.
            if (base | 0xff) >= len {
                return false;
            }
            if std::mem::replace(&mut seen[base], true) {
                continue;
            }
            for byte in 1..=255usize {
                let child = base ^ byte;
                let unit = self.units[child];
                if unit_label(unit) != byte as u32 {
                    continue;
                }
                let next = child ^ unit_offset(unit);
                if unit_has_leaf(unit) {
                    match self.units.get(next) {
                        Some(&leaf) => {
                            if !visit(unit_value(leaf)) {
                                return false;
                            }
                        }
                        None => return false,
                    }
                }
                stack.push(next);
            }
        }
        true
    }
}

const NO_VALUE: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Node {
    first_edge: u32,
    edge_count: u32,
    value: u32,
}

/// Compact immutable byte trie: each node's outgoing edges are contiguous and sorted.
#[derive(Debug, Clone)]
pub(crate) struct PieceTrie {
    nodes: Vec<Node>,
    labels: Vec<u8>,
    targets: Vec<u32>,
}

impl PieceTrie {
    /// Builds a trie; on duplicate keys the later value wins.
    pub(crate) fn build<'a>(keys: impl IntoIterator<Item = (&'a [u8], u32)>) -> Self {
        let mut keys: Vec<(&[u8], u32)> = keys.into_iter().collect();
        // Stable sort keeps duplicates in input order, so the last one is the later value.
        keys.sort_by(|a, b| a.0.cmp(b.0));
        let mut nodes: Vec<Node> = Vec::new();
        let mut labels: Vec<u8> = Vec::new();
        let mut targets: Vec<u32> = Vec::new();
        // Depth-first (preorder) over ranges of sorted keys sharing a prefix of length
        // `depth`, so that a walk down one path touches nearby memory. Each node's edges
        // are contiguous; a child's edge slot is patched when the child is emitted.
        let mut stack: Vec<(usize, usize, usize, Option<usize>)> = vec![(0, keys.len(), 0, None)];
        let mut children: Vec<(u8, usize, usize)> = Vec::new();
        while let Some((lo, hi, depth, slot)) = stack.pop() {
            let index = nodes.len() as u32;
            if let Some(slot) = slot {
                targets[slot] = index;
            }
            let mut i = lo;
            let mut value = NO_VALUE;
            while i < hi && keys[i].0.len() == depth {
                value = keys[i].1;
                i += 1;
            }
            children.clear();
            while i < hi {
                let byte = keys[i].0[depth];
                let mut j = i + 1;
                while j < hi && keys[j].0[depth] == byte {
                    j += 1;
                }
                children.push((byte, i, j));
                i = j;
            }
            let first_edge = labels.len();
            for &(byte, _, _) in &children {
                labels.push(byte);
                targets.push(0);
            }
            nodes.push(Node {
                first_edge: first_edge as u32,
                edge_count: children.len() as u32,
                value,
            });
            for (k, &(_, i, j)) in children.iter().enumerate().rev() {
                stack.push((i, j, depth + 1, Some(first_edge + k)));
            }
        }
        Self {
            nodes,
            labels,
            targets,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.len() <= 1 && self.nodes.first().is_none_or(|n| n.value == NO_VALUE)
    }

    fn child(&self, node: usize, byte: u8) -> Option<usize> {
        let n = self.nodes.get(node)?;
        let start = n.first_edge as usize;
        let end = start + n.edge_count as usize;
        let labels = self.labels.get(start..end)?;
        let i = labels.binary_search(&byte).ok()?;
        self.targets.get(start + i).map(|&t| t as usize)
    }

    /// Calls `f(length, value)` for every key that is a prefix of `text`, shortest first.
    pub(crate) fn for_each_prefix(&self, text: &[u8], mut f: impl FnMut(usize, u32)) {
        let mut node = 0;
        for (i, &b) in text.iter().enumerate() {
            match self.child(node, b) {
                Some(next) => node = next,
                None => return,
            }
            let value = self.nodes[node].value;
            if value != NO_VALUE {
                f(i + 1, value);
            }
        }
    }

    /// Length of the longest key that is a prefix of `text`.
    pub(crate) fn longest_prefix(&self, text: &[u8]) -> Option<usize> {
        let mut best = None;
        self.for_each_prefix(text, |len, _| best = Some(len));
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_trie_finds_all_prefixes() {
        let keys: Vec<(&[u8], u32)> =
            vec![(b"a", 0), (b"ab", 1), (b"abc", 2), (b"b", 3), (b"ab", 4)];
        let trie = PieceTrie::build(keys);
        let mut found = Vec::new();
        trie.for_each_prefix(b"abcd", |len, v| found.push((len, v)));
        assert_eq!(found, vec![(1, 0), (2, 4), (3, 2)]);
        assert_eq!(trie.longest_prefix(b"bx"), Some(1));
        assert_eq!(trie.longest_prefix(b"x"), None);
        assert!(!trie.is_empty());
        assert!(PieceTrie::build(Vec::<(&[u8], u32)>::new()).is_empty());
    }

    #[test]
    fn double_array_out_of_bounds_is_no_match() {
        // Root offset points far outside a two-unit array.
        let da = DoubleArray::from_le_bytes(&[0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
        assert_eq!(da.longest_prefix(b"abc"), None);
        assert!(!da.check_all_paths(|_| true));
        let empty = DoubleArray::from_le_bytes(&[]);
        assert_eq!(empty.longest_prefix(b"a"), None);
    }
}
