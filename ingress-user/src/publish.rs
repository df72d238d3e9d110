//! TODO-module publish
