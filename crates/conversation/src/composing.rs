//! Message composition indication (RFC 3994, `application/im-iscomposing+xml`).
