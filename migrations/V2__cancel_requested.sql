-- A cancel asked for while a run starts: recorded here, not in a process's
-- memory, so the worker sees it once it has recorded the runner's run id,
-- whichever comes first, and a restart does not forget it.
ALTER TABLE runs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
