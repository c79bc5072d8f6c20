//! Shell-style patterns for case names (`--cases`, `--unsupported`).

/// A pattern over a whole case name: `*` matches any run of characters,
/// `?` one character, `[abc]`, `[a-z]` and `[!abc]` one character of (or
/// not of) a set; every other character matches itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Vec<char>,
    text: String,
}

impl Glob {
    /// The pattern `text`. An unclosed `[` matches itself.
    pub fn new(text: &str) -> Glob {
        Glob {
            pattern: text.chars().collect(),
            text: text.to_string(),
        }
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let name: Vec<char> = name.chars().collect();
        // Iterative matching with one backtrack point, the last `*`:
        // linear in practice, never exponential.
        let (mut p, mut n) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            if p < self.pattern.len() {
                match self.pattern[p] {
                    '*' => {
                        star = Some((p, n));
                        p += 1;
                        continue;
                    }
                    '?' => {
                        p += 1;
                        n += 1;
                        continue;
                    }
                    '[' => {
                        if let Some((hit, next)) = self.class(p, name[n]) {
                            if hit {
                                p = next;
                                n += 1;
                                continue;
                            }
                        } else if name[n] == '[' {
                            p += 1;
                            n += 1;
                            continue;
                        }
                    }
                    c if c == name[n] => {
                        p += 1;
                        n += 1;
                        continue;
                    }
                    _ => {}
                }
            }
            match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            }
        }
        self.pattern[p..].iter().all(|&c| c == '*')
    }

    /// Judges `c` against the class starting at `self.pattern[start]`
    /// (`[`): whether it matches and where the pattern goes on, or `None`
    /// if the class is not closed.
    fn class(&self, start: usize, c: char) -> Option<(bool, usize)> {
        let pat = &self.pattern;
        let mut i = start + 1;
        let negated = matches!(pat.get(i), Some('!' | '^'));
        if negated {
            i += 1;
        }
        let mut hit = false;
        let mut first = true;
        while i < pat.len() {
            if pat[i] == ']' && !first {
                return Some((hit != negated, i + 1));
            }
            first = false;
            if i + 2 < pat.len() && pat[i + 1] == '-' && pat[i + 2] != ']' {
                hit |= pat[i] <= c && c <= pat[i + 2];
                i += 3;
            } else {
                hit |= pat[i] == c;
                i += 1;
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::Glob;

    fn m(p: &str, n: &str) -> bool {
        Glob::new(p).matches(n)
    }

    #[test]
    fn stars_and_question_marks_match_like_a_shell() {
        assert!(m("*", ""));
        assert!(m("*", "anything"));
        assert!(m("x-*", "x-FTR-CHECKSUM"));
        assert!(!m("x-*", "w-FTR-511"));
        assert!(m("*-differencing", "x-FTR-CHECKSUM-differencing"));
        assert!(m("block-size-?k", "block-size-8k"));
        assert!(!m("block-size-?k", "block-size-16k"));
        assert!(m("a*b*c", "a-x-b-y-c"));
        assert!(!m("a*b*c", "a-x-b-y-d"));
        assert!(m("chain-depth-1", "chain-depth-1"));
        assert!(!m("chain-depth-1", "chain-depth-16"));
    }

    #[test]
    fn classes_match_one_character_of_a_set_or_range() {
        assert!(m("[xw]-*", "w-FTR-511"));
        assert!(!m("[xw]-*", "vpc-chain"));
        assert!(m("block-size-[0-9]k", "block-size-4k"));
        assert!(!m("block-size-[!0-9]k", "block-size-4k"));
        assert!(m("[]]", "]"));
        // An unclosed class is a literal bracket.
        assert!(m("a[b", "a[b"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(30));
        assert!(!m(&pattern, &name));
    }
}
