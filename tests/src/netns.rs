//! Network namespace topologies for end-to-end tests.
