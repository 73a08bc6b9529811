//! Short byte strings assembled on the stack: dialog lookup keys built per message need no
//! heap unless they are unusually long, and a key that is kept is copied once into its
//! shared `Arc`. (Transaction keys are inline in their transaction: see
//! `transaction::key`.)

/// Bytes appended on the stack, spilling to the heap past 160 bytes.
pub(crate) type Scratch = smallvec::SmallVec<[u8; 160]>;
