//! The chaos loop (placeholder).
