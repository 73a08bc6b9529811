//! Offsets of a typed view's parts inside the header value it was parsed from.
//!
//! Validation parses Via, From, To and CSeq anyway; keeping where their parts are lets the
//! typed accessors rebuild the same view later by slicing, instead of parsing twice. A view
//! cannot be stored in the message it borrows from, so this is what is stored.

/// A byte range relative to a base slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Sp(u16, u16);

impl Sp {
    /// The range `start..end` of a base no longer than `u16::MAX` (callers check that).
    #[inline]
    pub(crate) fn new(start: usize, end: usize) -> Sp {
        debug_assert!(start <= end && end <= usize::from(u16::MAX));
        Sp(start as u16, end as u16)
    }

    /// Where `sub` lies inside `base`; `None` if it does not (then nothing is cached).
    #[inline]
    pub(crate) fn of(base: &[u8], sub: &[u8]) -> Option<Sp> {
        if sub.is_empty() {
            // An empty part cut from `base` keeps its place (an editor that appends to the
            // parameters of a Via that has none writes there); any other is `0..0`.
            let off = (sub.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
            let at = u16::try_from(off)
                .ok()
                .filter(|&o| usize::from(o) <= base.len());
            return Some(at.map_or(Sp(0, 0), |o| Sp(o, o)));
        }
        let off = (sub.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
        let end = off.checked_add(sub.len())?;
        if end > base.len() {
            return None;
        }
        // Values longer than 64 KiB are not cached (they are parsed on each access).
        Some(Sp(u16::try_from(off).ok()?, u16::try_from(end).ok()?))
    }

    /// The range as offsets.
    #[inline]
    pub(crate) fn bounds(self) -> (usize, usize) {
        (usize::from(self.0), usize::from(self.1))
    }

    /// The slice of `base` this range names (empty if out of range).
    #[inline]
    pub(crate) fn get(self, base: &[u8]) -> &[u8] {
        base.get(self.0 as usize..self.1 as usize)
            .unwrap_or_default()
    }

    /// The same as text; `""` if not UTF-8 (never the case for the token parts cached).
    #[inline]
    pub(crate) fn str(self, base: &[u8]) -> &str {
        std::str::from_utf8(self.get(base)).unwrap_or("")
    }
}

/// [`Sp::of`] for an optional part.
#[inline]
pub(crate) fn opt(base: &[u8], sub: Option<&[u8]>) -> Option<Option<Sp>> {
    match sub {
        None => Some(None),
        Some(s) => Sp::of(base, s).map(Some),
    }
}

/// `part` as `Bytes` sharing `buf`, if it lies inside `buf` (an empty part always does).
pub(crate) fn shared_slice(buf: &bytes::Bytes, part: &[u8]) -> Option<bytes::Bytes> {
    if part.is_empty() {
        return Some(bytes::Bytes::new());
    }
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    (start <= buf.len() && part.len() <= buf.len() - start)
        .then(|| buf.slice(start..start + part.len()))
}
