//! Simulated file system (skeleton).
