-- 0003: names that say what the tracking columns hold. `message_id` held the tracking id (the random
-- id in the pixel URL, not the message's Message-ID header), and `recipient` held every envelope
-- recipient of the message, comma-separated. RENAME COLUMN (SQLite 3.25+) also rewrites the indexes
-- and the foreign key of pixel_opens, so no row is copied and nothing can be lost.
ALTER TABLE tracked_messages RENAME COLUMN message_id TO tracking_id;
ALTER TABLE tracked_messages RENAME COLUMN recipient TO recipients;
ALTER TABLE pixel_opens RENAME COLUMN message_id TO tracking_id;
