//! Splitting text on added/special tokens the way `transformers`' slow tokenizers do
//! (`Trie.split` followed by the `lstrip` / `rstrip` / `single_word` adjustments).

use std::collections::HashMap;

/// One entry of `added_tokens_decoder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AddedToken {
    pub(crate) content: String,
    pub(crate) lstrip: bool,
    pub(crate) rstrip: bool,
    pub(crate) single_word: bool,
}

impl AddedToken {
    pub(crate) fn plain(content: &str) -> Self {
        Self {
            content: content.to_owned(),
            lstrip: false,
            rstrip: false,
            single_word: false,
        }
    }
}

/// Python's `str.isspace()` for one character.
pub(crate) fn py_is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.strip()` without arguments.
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(py_is_space)
}

#[derive(Debug, Default, Clone)]
struct Node {
    children: HashMap<char, usize>,
    terminal: bool,
}

/// Character trie with `transformers.tokenization_python.Trie.split` semantics.
#[derive(Debug, Clone)]
pub(crate) struct SplitTrie {
    nodes: Vec<Node>,
}

impl Default for SplitTrie {
    fn default() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }
}

impl SplitTrie {
    pub(crate) fn add(&mut self, word: &str) {
        if word.is_empty() {
            return;
        }
        let mut node = 0;
        for c in word.chars() {
            node = match self.nodes[node].children.get(&c) {
                Some(&next) => next,
                None => {
                    let next = self.nodes.len();
                    self.nodes.push(Node::default());
                    self.nodes[node].children.insert(c, next);
                    next
                }
            };
        }
        self.nodes[node].terminal = true;
    }

    fn child(&self, node: usize, c: char) -> Option<usize> {
        self.nodes[node].children.get(&c).copied()
    }

    /// Cuts `text` around added tokens. Matching starts at the earliest partial match and
    /// prefers the longest token there, exactly as the Python trie does (including its
    /// quirks when tokens overlap).
    pub(crate) fn split<'t>(&self, text: &'t str) -> Vec<&'t str> {
        if self.nodes[0].children.is_empty() {
            return vec![text];
        }
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let n = chars.len();
        let byte_at = |i: usize| chars.get(i).map_or(text.len(), |c| c.0);

        // (start index, trie node) for every partial match in progress, by start.
        let mut states: Vec<(usize, usize)> = Vec::new();
        let mut offsets: Vec<usize> = vec![0];
        let mut skip = 0usize;
        for current in 0..n {
            let ch = chars[current].1;
            if skip > 0 && current < skip {
                continue;
            }
            let mut to_remove: Vec<usize> = Vec::new();
            let mut reset = false;
            let mut k = 0;
            while k < states.len() {
                let (state_start, node) = states[k];
                if self.nodes[node].terminal {
                    // A token ended: look ahead from every earlier-or-equal partial match
                    // for the longest token, then cut.
                    let mut start = state_start;
                    let mut end = current;
                    for &(lookstart, looknode) in &states {
                        if lookstart > start {
                            break;
                        }
                        let mut lookahead = if lookstart < start {
                            current + 1
                        } else {
                            current
                        };
                        end = lookahead;
                        let mut looknode = looknode;
                        if self.nodes[looknode].terminal {
                            start = lookstart;
                            end = lookahead;
                            skip = lookahead;
                        }
                        while let Some(next) = chars
                            .get(lookahead)
                            .and_then(|&(_, c)| self.child(looknode, c))
                        {
                            looknode = next;
                            lookahead += 1;
                            if self.nodes[looknode].terminal {
                                start = lookstart;
                                end = lookahead;
                                skip = lookahead;
                            }
                            if lookahead == n {
                                break;
                            }
                        }
                    }
                    offsets.push(start);
                    offsets.push(end);
                    reset = true;
                    break;
                } else if let Some(next) = self.child(node, ch) {
                    states[k].1 = next;
                } else {
                    to_remove.push(state_start);
                }
                k += 1;
            }
            if reset {
                states.clear();
            } else if !to_remove.is_empty() {
                states.retain(|s| !to_remove.contains(&s.0));
            }
            if current >= skip {
                if let Some(next) = self.child(0, ch) {
                    states.push((current, next));
                }
            }
        }
        if let Some(&(start, _)) = states.iter().find(|s| self.nodes[s.1].terminal) {
            offsets.push(start);
            offsets.push(n);
        }
        offsets.push(n);

        let mut pieces = Vec::new();
        let mut start = 0;
        for end in offsets {
            if start >= end {
                continue;
            }
            pieces.push(&text[byte_at(start)..byte_at(end)]);
            start = end;
        }
        pieces
    }
}

/// Applies the `lstrip` / `rstrip` / `single_word` flags of added tokens to the split
/// segments (in place, left to right, as `PreTrainedTokenizer.tokenize` does).
pub(crate) fn apply_token_flags(
    segments: &mut [String],
    lookup: impl Fn(&str) -> Option<AddedToken>,
) {
    for i in 0..segments.len() {
        let Some(tok) = lookup(&segments[i]) else {
            continue;
        };
        let token = segments[i].clone();
        let left = (i > 0).then(|| segments[i - 1].clone());
        let right = segments.get(i + 1).cloned();
        let left = left.filter(|s| !s.is_empty());
        let right = right.filter(|s| !s.is_empty());
        if tok.rstrip {
            if let Some(r) = &right {
                segments[i + 1] = r.trim_start_matches(py_is_space).to_owned();
            }
        }
        if tok.lstrip {
            if let Some(l) = &left {
                segments[i - 1] = l.trim_end_matches(py_is_space).to_owned();
            }
        }
        if tok.single_word {
            if left.as_ref().is_some_and(|l| !l.ends_with(' ')) {
                segments[i - 1].push_str(&token);
                segments[i].clear();
            } else if right.as_ref().is_some_and(|r| !r.starts_with(' ')) {
                segments[i + 1] = format!("{token}{}", segments[i + 1]);
                segments[i].clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trie(words: &[&str]) -> SplitTrie {
        let mut t = SplitTrie::default();
        for w in words {
            t.add(w);
        }
        t
    }

    #[test]
    fn splits_like_transformers() {
        let t = trie(&["[CLS]", "extra_id_1", "extra_id_100"]);
        assert_eq!(
            t.split("[CLS] This is a extra_id_100"),
            vec!["[CLS]", " This is a ", "extra_id_100"]
        );
        let t = trie(&["</s>", "<unk>"]);
        assert_eq!(
            t.split("a</s>b<unk></s>"),
            vec!["a", "</s>", "b", "<unk>", "</s>"]
        );
        assert_eq!(t.split("</s"), vec!["</s"]);
        assert_eq!(t.split(""), Vec::<&str>::new());
        let t = trie(&["blowing", "lower"]);
        assert_eq!(t.split("blower"), vec!["b", "lower"]);
    }

    #[test]
    fn strip_flags() {
        let mut segs: Vec<String> = ["a  ", "<x>", "  b"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        apply_token_flags(&mut segs, |s| {
            (s == "<x>").then(|| AddedToken {
                content: s.to_owned(),
                lstrip: true,
                rstrip: true,
                single_word: false,
            })
        });
        assert_eq!(segs, vec!["a", "<x>", "b"]);
    }

    #[test]
    fn python_whitespace() {
        assert_eq!(py_strip("\u{1c}\u{a0} x \u{3000}\n"), "x");
        assert_eq!(py_strip("\u{200b}x"), "\u{200b}x");
    }
}
