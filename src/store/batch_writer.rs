//! One writer thread per table that many callers append to, committing in batches.
