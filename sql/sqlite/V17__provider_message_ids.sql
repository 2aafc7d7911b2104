-- A provider's delivery receipts name a message by the provider's own id,
-- which the `sent` event keeps as detail.provider_message_id: the feedback
-- routes find the message by (transport, that id). Partial, so events
-- without one cost nothing.
CREATE INDEX message_events_provider_id ON message_events
    (transport, json_extract(detail, '$.provider_message_id'))
    WHERE kind = 'sent' AND json_extract(detail, '$.provider_message_id') IS NOT NULL;
