//! Counts for the dashboard's overview.
