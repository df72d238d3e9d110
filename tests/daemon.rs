//! Daemon behaviour tests.
