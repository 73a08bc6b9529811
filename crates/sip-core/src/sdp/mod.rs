//! SDP (RFC 8866) session descriptions: model, parser, serializer.
