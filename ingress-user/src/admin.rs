//! TODO-module admin
