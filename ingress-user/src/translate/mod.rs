//! Turns `Inputs` into a `Snapshot` plus diagnostics. Pure: no I/O.
