//! SIP ladder diagrams (text and SVG) recorded from the platform's wire tap.
