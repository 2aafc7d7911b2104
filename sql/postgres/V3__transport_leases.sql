-- One node drives each transport at a time, so its rate limit and breaker
-- are exact across nodes: the node holding `holder` until `held_until`
-- claims for it; another node takes over once the lease has expired.
ALTER TABLE transport_state ADD COLUMN holder text;
ALTER TABLE transport_state ADD COLUMN held_until timestamptz;
