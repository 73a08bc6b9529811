//! PIDF presence documents (RFC 3863) with the RPID activities (RFC 4480) they carry.
