//! Short byte strings assembled on the stack: lookup keys built per message (transaction
//! and dialog keys) need no heap unless they are unusually long, and a key that is kept is
//! copied once into its shared `Arc`.

use std::sync::Arc;

/// Bytes appended on the stack, spilling to the heap past 160 bytes.
pub(crate) struct Scratch {
    stack: [u8; 160],
    len: usize,
    spill: Vec<u8>,
}

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch {
            stack: [0; 160],
            len: 0,
            spill: Vec::new(),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, c: u8) {
        if self.spill.is_empty() {
            if let Some(slot) = self.stack.get_mut(self.len) {
                *slot = c;
                self.len += 1;
                return;
            }
        }
        self.extend_from_slice(&[c]);
    }

    /// Appends `s` lower-cased (ASCII).
    #[inline]
    pub(crate) fn extend_lowercase(&mut self, s: &[u8]) {
        let start = self.len;
        self.extend_from_slice(s);
        if self.spill.is_empty() {
            self.stack[start..self.len].make_ascii_lowercase();
        } else {
            let end = self.spill.len();
            self.spill[end - s.len()..].make_ascii_lowercase();
        }
    }

    #[inline]
    pub(crate) fn extend_from_slice(&mut self, s: &[u8]) {
        if self.spill.is_empty() {
            if let Some(dst) = self.stack.get_mut(self.len..self.len + s.len()) {
                dst.copy_from_slice(s);
                self.len += s.len();
                return;
            }
            self.spill.extend_from_slice(&self.stack[..self.len]);
        }
        self.spill.extend_from_slice(s);
    }

    /// What was appended.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.spill.is_empty() {
            &self.stack[..self.len]
        } else {
            &self.spill
        }
    }

    /// What was appended, in one shared allocation.
    pub(crate) fn to_arc(&self) -> Arc<[u8]> {
        Arc::from(self.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::Scratch;

    #[test]
    fn long_text_spills_to_the_heap_intact() {
        let mut s = Scratch::new();
        let mut expected = Vec::new();
        for i in 0..100u8 {
            s.push(i);
            s.extend_from_slice(b"xy");
            expected.push(i);
            expected.extend_from_slice(b"xy");
        }
        assert_eq!(s.as_slice(), &expected[..]);
        assert_eq!(&*s.to_arc(), &expected[..]);
        let mut short = Scratch::new();
        short.extend_from_slice(b"1z9hG4bK");
        assert_eq!(&*short.to_arc(), b"1z9hG4bK");
    }

    #[test]
    fn lowercase_appends_on_the_stack_across_the_spill_and_on_the_heap() {
        let mut s = Scratch::new();
        let mut expected = Vec::new();
        for _ in 0..30 {
            s.extend_lowercase(b"Host.EXAMPLE");
            s.push(b'X');
            expected.extend_from_slice(b"host.exampleX");
        }
        assert_eq!(s.as_slice(), &expected[..]);
    }
}
