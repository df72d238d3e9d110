//! TODO-module metrics
