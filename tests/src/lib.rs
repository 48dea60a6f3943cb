//! e2e harness skeleton
