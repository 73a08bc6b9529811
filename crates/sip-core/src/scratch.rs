//! Short byte strings assembled on the stack: lookup keys built per message (transaction
//! and dialog keys) need no heap unless they are unusually long, and a key that is kept is
//! copied once into its shared `Arc`.

/// Bytes appended on the stack, spilling to the heap past 160 bytes.
pub(crate) type Scratch = smallvec::SmallVec<[u8; 160]>;
