//! The proxy workers.
