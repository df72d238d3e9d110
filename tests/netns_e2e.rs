//! End to end tests in network namespaces.
