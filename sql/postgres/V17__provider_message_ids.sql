-- A provider's delivery receipts name a message by the provider's own id
-- (Twilio's SID, FCM's name, SES's MessageId, ...), which the `sent` event
-- keeps as detail.provider_message_id: the feedback routes find the
-- message by (transport, that id). Partial, so events without one cost
-- nothing. Declared ON ONLY the partitioned table, as V16's indexes are:
-- partitions made from now on get it as they are created, and Herald
-- builds it on the ones already there (see `partition_indexes` in the
-- PostgreSQL backend).
CREATE INDEX message_events_provider_id ON ONLY message_events
    (transport, (detail ->> 'provider_message_id'))
    WHERE kind = 'sent' AND detail ? 'provider_message_id';
