-- Products' deadlines: a model's succeeded operational runs by end and by time0 (a cycle's
-- issue), runs a fallback requested, and a slot's deliveries in arrival order.
CREATE INDEX runs_succeeded_by_end ON runs(model, ended_at) WHERE session IS NULL AND state = 'succeeded';
CREATE INDEX runs_issued ON runs(model, time0) WHERE session IS NULL AND state = 'succeeded';
CREATE INDEX runs_requested ON runs(requested_by) WHERE requested_by IS NOT NULL;
CREATE INDEX deliveries_by_slot ON deliveries(model, slot, submission);
