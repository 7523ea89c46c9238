//! The tracking tables: `tracked_messages` (one row per message that really got a pixel) and
//! `pixel_opens` (one row per fetch of a known pixel).

pub mod report;
